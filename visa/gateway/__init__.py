"""The browser's way into an instance: the desktop websocket relay and the Jupyter proxy.

* ``api``: ``POST /api/instances/<uid>/connect`` issues a one-time desktop token (Flask).
* ``desktop``: ``/ws/desktop/<uid>`` checks the token, does the VNC authentication with the
  instance secret itself, offers the browser an RFB handshake without security, then relays,
  dropping the input of view-only members and recording activity.
* ``jupyter``: ``/jupyter/<uid>/...`` proxies HTTP and websockets to the owner's JupyterLab,
  authenticated by the visa session cookie, adding the Jupyter token on the way.
* ``routes``: the Starlette routes that ``visa.asgi`` mounts beside the Flask app.

The instance secret (VNC password, Jupyter token) never reaches a browser.
"""
