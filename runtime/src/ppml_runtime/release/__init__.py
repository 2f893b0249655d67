"""The release: what crosses from the data owner's namespace to the analyst's.

The trainer runs in the data owner's namespace. Only differentially private results leave it:

- the trained model (DP by post-processing of DP-SGD), written by the trainer as a flat model
  directory (:mod:`.artifact`), served read-only by the ``serve-model`` role (:mod:`.server`) and
  fetched, verified against the digest the trainer reported, by the ``fetch-model`` role in the
  analyst's namespace (:mod:`.fetch`);
- the test accuracy and loss, released through a Gaussian mechanism the operator charges
  (:mod:`.mechanism`).

The exact test metrics stay owner-side (the trainer's logs and report). :mod:`.mechanism` and
:mod:`.files` use the standard library and numpy only; :mod:`.artifact` needs torch and
safetensors.
"""
