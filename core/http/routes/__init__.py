"""One Quart blueprint per API resource: parse the request, call a service, encode."""
