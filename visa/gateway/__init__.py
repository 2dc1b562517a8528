"""The browser's way into an instance: the desktop websocket relay and the Jupyter proxy.

* ``api``: ``POST /api/instances/<uid>/connect`` issues a one-time desktop token bound to the
  browser session that asks (Flask).
* ``desktop``: ``/ws/desktop/<uid>`` checks the token, does the VNC authentication with the
  instance secret itself, offers the browser an RFB handshake without security, then relays,
  dropping the input of view-only members and recording activity.
* ``rdp``: a machine that offers RDP and no VNC is relayed like a VNC desktop, from a sandboxed
  bridge (an X server whose only window is FreeRDP) the desktop starts for each connection.
* ``jupyter``: the owner's JupyterLab (HTTP and websockets) on a host of its own under the
  user-content domain, ``<uid>.<domain>``, never on visa's origin; ``/jupyter/<uid>/...`` on
  visa's host only sends the owner there with a one-time token. The proxy adds the Jupyter
  token on the way.
* ``routes``: the Starlette routes that ``visa.asgi`` mounts beside the Flask app.

The instance secret (VNC password, Jupyter token) never reaches a browser.
"""
