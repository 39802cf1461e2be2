"""kanjian.appliance_api.http: the appliance's HTTP face (FastAPI, live view, auth, the operator's page)."""
