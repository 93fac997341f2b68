"""The Docker Engine authorization plugin: which registry a request names, and the answer.

request.py  AuthZRequest: dockerd's envelope and request target, read as Go reads them
checks.py   the table from Engine API route to check function (what it asks of registries)
plugin.py   authorize (the answer to one request) and AuthZPlugin (the unix-socket server)
framing.py  HTTP/1.1 framing of the plugin socket
gojson.py   JSON read as Go's encoding/json reads it (case folding, duplicates)
gourl.py    request targets and queries read as Go's net/url reads them
"""
