"""The server's domain services, shared by the REST API and the dashboard.

Each function takes an open `Session` first and leaves committing to the caller
(`Database.session(write=True)` commits at the end of the block). Errors are the classes of
`regward.server.errors`; their messages are written for the user and name the bad value.
"""
