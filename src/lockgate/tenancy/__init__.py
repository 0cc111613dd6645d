"""Identity and tenancy: who may do what, in which organisation and project.

Mostly pure domain logic (key format and hashing, roles and permissions, JWT
verification, the audit hash chain, secret encryption). Persistence lives in
``lockgate.store``; the data plane sees only ``Principal`` objects.
"""
