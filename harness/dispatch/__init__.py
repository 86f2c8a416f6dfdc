"""Dispatch: one run, many runs, and where they execute (the driver of the data flow).

===============  ================================================================
``runner``       one run: validate the request, build the cohort, pretrain (cached),
                 load the encoder, apply the label fraction, evaluate, write the record
``pretraining``  the pretraining cache: key, lock, rank-0 broadcast, trust check
``executors``    submitit executors (in-process ``debug``, ``local``, ``slurm``) and their options
``jobs``         the job callable (``RunJob``) that runs inside a job, requeued on preemption
``outcomes``     the parent's side: submitting, waiting, each job's outcome, the summary
``sweep``        methods x tasks x fractions x seeds as job arrays, pretraining first
``failures``     failure records of failed runs, and which errors are expected mistakes
===============  ================================================================
"""
