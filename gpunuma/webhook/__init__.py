"""The mutating admission webhook (DESIGN §9) and ``gpunuma inject``, which share one pure mutation.

``mutation`` decides (no I/O), ``review`` speaks AdmissionReview v1, ``server`` serves it over TLS,
``inject`` applies the same mutation to manifests offline.
"""
