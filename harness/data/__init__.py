"""Data: from each dataset's ORIGINAL on-disk layout to records (step 1 of the data flow).

=============================  ===========================================================
``roots``                      where the data is: ``--data-root``, per-source overrides, or the
                               synthetic world (generated on first use by ``harness.synth``)
``sources``                    a task's data root, the world it names, one dataset's records
``mimic_cxr`` ``chexpert``     one adapter per dataset: ``load(root) -> Records`` and
``nih14`` ``openi`` ``mock``   ``check(root) -> CheckReport``, in the dataset's own layout
``ehr`` ``reports``            MIMIC-IV tables joined to MIMIC-CXR; radiology report sections
``tables``                     typed CSV reading with ``file:row: field:`` errors
``schema``                     the ``Records`` contract, label sets, integrity counts
``check``                      ``CheckReport`` (``harness data check``) and decoding every image
``images``                     the image store (decoded once, cached) and ``ImageView``, its one row view
=============================  ===========================================================

The layouts and quirks the adapters rely on are written down in ``docs/datasets.md``.
"""
