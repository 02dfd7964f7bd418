"""The HTTP API: routes translate HTTP to domain calls and back."""
