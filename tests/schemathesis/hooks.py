"""schemathesis hooks for `make fuzz-http` (loaded through SCHEMATHESIS_HOOKS).

cargo lambda watch's function URL emulator answers 500 by itself, without invoking the function,
for two kinds of request that schemathesis sends on purpose:
- a header value that is not ASCII (obs-text such as b"\\xd7\\xf8\\x9b");
- a body that is not UTF-8 (the emulator puts bodies into the event as text).
A 500 from those would be a finding about the emulator, not about the function. So such a header
is left out, and such a body is sent with its invalid bytes replaced (still not valid JSON, so
still a negative case for the function); the rest of the case is sent as generated. The function's
own handling of base64 and non-UTF-8 bodies is tested in-process (tests/it/).
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in [n for n, v in headers.items() if isinstance(v, str) and not v.isascii()]:
        del headers[name]
    if isinstance(case.body, (bytes, bytearray)):
        try:
            bytes(case.body).decode("utf-8")
        except UnicodeDecodeError:
            case.body = bytes(case.body).decode("utf-8", "replace").encode("utf-8")
