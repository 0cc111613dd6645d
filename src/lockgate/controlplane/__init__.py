"""The control plane: admin actions, the admin API and provisioning. Never on the request path."""
