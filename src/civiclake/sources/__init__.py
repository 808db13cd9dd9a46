"""Sources: where data comes from. Each source module exposes the same shape:

a client (how to talk to the service), a dataset spec (what to ask for, how to normalize it),
and ``fetch``/``read`` functions that land raw data in the lake and return lake URLs.
"""
