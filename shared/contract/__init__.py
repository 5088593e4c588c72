"""The API's contract as pydantic models: what requests may carry and what answers hold.

The API validates requests with these models (through spectree) and generates its
OpenAPI document from them; the CLI's client reads answers with the same models. Plain
pydantic, no Flask: the CLI imports it without the server's dependencies.
"""
