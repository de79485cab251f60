"""One place per provider kind: URL layout, auth, quirks; OAuth token refresh."""
