"""Where Regward's parts meet when nobody says otherwise, in one place for server and agent.

    SERVER_PORT, SERVER_URL      8080, http://127.0.0.1:8080: `regward server run`, `registries`
    PROXY_PORT, PROXY_LISTEN     3128, 127.0.0.1:3128: the agent's egress proxy
    AUTHZ_SOCKET                 /run/docker/plugins/regward.sock: the agent's AuthZ plugin
    LONG_POLL_SECONDS            30: how long an agent asks a policy poll to wait
    MAX_LONG_POLL_SECONDS        300: the longest the server holds one

A leaf like `errors`: the policy core, the server and the agent may all import it.
"""

SERVER_PORT = 8080
SERVER_URL = f"http://127.0.0.1:{SERVER_PORT}"
PROXY_PORT = 3128
PROXY_LISTEN = f"127.0.0.1:{PROXY_PORT}"
AUTHZ_SOCKET = "/run/docker/plugins/regward.sock"
LONG_POLL_SECONDS = 30
MAX_LONG_POLL_SECONDS = 300
