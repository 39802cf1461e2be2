"""kanjian.appliance_api: the appliance's two faces, ``http`` (FastAPI) and ``cli`` (``kanjian``)."""
