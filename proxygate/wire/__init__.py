"""Sans-I/O wire codecs: bytes and dicts in, IR events and dicts out. No aiohttp, no clock."""
