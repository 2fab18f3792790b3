"""The mutating admission webhook (DESIGN §9) and ``gpunuma inject``, which share one pure mutation.

``mutation`` decides (no I/O; ``selection``, ``clashes`` and ``edits`` are its parts, ``edits``
recording the JSON patch as it changes the pod), ``review`` speaks AdmissionReview v1, ``server``
serves it over TLS, ``inject`` applies the same mutation to manifests offline.
"""
