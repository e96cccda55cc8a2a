"""Monitoring and continuous training, one small module per step.

``policy``       what counts as drift or decay, and what to do about it (embeddable in a model spec);
``target``       the data to judge: a gateway time window or a batch frame, as a profile and rows; the
                 inference log's compaction before a window is read;
``drift``        per-feature drift against the reference profile, and the dataset-drift share;
``performance``  the metric on the labelled rows against the one recorded at evaluation, its coverage and
                 whether the window's labels have matured;
``estimate``     the metric expected from the version's calibrated confidence (CBPE), labels or not;
``rejudge``      earlier windows judged again as their late labels arrive, their reports updated;
``decision``     none / warn / retrain from the two, and the retrain cool-down (requested vs started retrains);
``trigger``      a retrain decision becomes a Prefect event, or a direct in-process run; finding a request's run;
``report``       the picture and the Prefect artifacts a person reads.

The flow that strings them together is :mod:`flows.monitor`; nothing here runs at import.
"""
