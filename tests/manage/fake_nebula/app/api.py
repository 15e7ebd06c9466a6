"""A WSGI app answering /api/version like Nebula's, with an optional ?sleep=SECONDS."""

import json
import os
import time
from urllib.parse import parse_qs


def create_app():
    """The WSGI callable gunicorn serves."""

    def app(environ, start_response):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        time.sleep(float(query.get("sleep", ["0"])[0]))
        if environ["PATH_INFO"] != "/api/version":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"err_msg": "not found", "err_code": 404}']
        body = json.dumps({"version_major": "26.1", "version_minor": "0", "pid": os.getpid()})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    return app
