"""segapp: ``segkit app``, a local web app over a segprep WORK folder and segtrain runs.

Two pages, one ASGI server (FastAPI + uvicorn, Jinja2 templates, plain JavaScript):

* review (``/``): every sample of the WORK's clean manifest as thumbnails with the mask
  outlined (the original beside the repair where clean repaired it), filters, sorting by
  clean's scores, a detail view, and keyboard decisions written to ``WORK/reviews/decisions.csv``
  (:mod:`segprep.decisions`), which ``segprep clean`` applies;
* model (``/model``): a trained run's masks on uploaded or test images, through
  ``segtrain.predict``'s code path.

The app reads shards and raw files and writes only the decisions file.
"""
