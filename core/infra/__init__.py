"""Infrastructure every layer above builds on: the asyncio graph bridge and graph loading,
settings, the hookspecs and plugin manager, typed registries, the error tree, the records
and their wire converter, JSON encoding, the storage protocols, the webhook policy, and
``Core`` (the objects one app is wired from).
"""
