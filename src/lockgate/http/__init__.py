"""A small HTTP/1.1 server and pooled client on asyncio + httptools.

The data plane's speed ceiling is set here: no framework, no per-request
object graph beyond one request and one connection, bytes in and bytes out.
The package knows nothing about models, tenants or OpenAI; it moves bytes.
"""
