"""The HTTP and websocket gateway: a WSGI app (webob) served by waitress, speaking only bus messages."""
