#!/usr/bin/env python3
"""A stand-in for the Microsoft Entra token endpoint, for Postgate's tests only.

Serves POST /{tenant}/oauth2/v2.0/token over HTTPS on 127.0.0.1 with the lab's server certificate.
Accepts one tenant and client id, with either the client secret or an RS256 client assertion
signed by the registered certificate. Each issued token lives TOKEN_LIFETIME seconds and becomes
the PostgreSQL password of ROLE (set through the admin connection), so an expired token stops
working. Issued tokens are appended to TOKENS_FILE (and POSTGATE_TOKEN_LOG, if set, which
scripts/test scans the whole suite's output for) so no token can appear in any output unnoticed.

Environment: PORT_FILE, CERT, KEY, TENANT, CLIENT_ID, CLIENT_SECRET, CLIENT_CERT (optional PEM
path), TOKEN_LIFETIME, ROLE, ADMIN_CONNINFO, ADMIN_PASSWORD, TOKENS_FILE.
"""
import base64, http.server, json, os, secrets, ssl, subprocess, sys, threading, time, urllib.parse

env = os.environ
TENANT, CLIENT, SECRET = env["TENANT"], env["CLIENT_ID"], env["CLIENT_SECRET"]
LIFETIME = int(env.get("TOKEN_LIFETIME", "3"))
lock = threading.Lock()

def set_password(token):
    sql = "ALTER ROLE \"%s\" PASSWORD '%s'" % (env["ROLE"], token)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", env["ADMIN_CONNINFO"], "-c", sql],
                   env={**os.environ, "PGPASSWORD": env["ADMIN_PASSWORD"]}, check=True, stdout=subprocess.DEVNULL)

def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def assertion_ok(jwt, aud):
    cert_path = env.get("CLIENT_CERT")
    if not cert_path:
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    head, body, sig = jwt.split(".")
    claims = json.loads(b64d(body))
    if claims.get("iss") != CLIENT or claims.get("sub") != CLIENT or claims.get("aud") != aud:
        return False
    if not (claims["nbf"] - 60 <= time.time() <= claims["exp"]):
        return False
    cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    cert.public_key().verify(b64d(sig), (head + "." + body).encode(), padding.PKCS1v15(), hashes.SHA256())
    return True

class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
        get = lambda k: form.get(k, [""])[0]
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return self.reply(404, {"error": "not_found"})
        if parts[0] != TENANT:
            return self.reply(400, {"error": "invalid_request", "error_codes": [90002], "error_description": "Tenant not found."})
        if get("client_id") != CLIENT:
            return self.reply(400, {"error": "unauthorized_client", "error_codes": [700016], "error_description": "Application not found."})
        if get("scope") != "https://ossrdbms-aad.database.windows.net/.default" or get("grant_type") != "client_credentials":
            return self.reply(400, {"error": "invalid_scope", "error_codes": [70011]})
        aud = "https://%s:%d/%s/oauth2/v2.0/token" % (self.server.server_address[0], self.server.server_address[1], TENANT)
        if get("client_assertion"):
            try:
                ok = assertion_ok(get("client_assertion"), aud)
            except Exception:
                ok = False
            if not ok:
                return self.reply(401, {"error": "invalid_client", "error_codes": [700027]})
        elif get("client_secret") != SECRET:
            return self.reply(401, {"error": "invalid_client", "error_codes": [7000215], "error_description": "Invalid client secret provided."})
        with lock:
            token = "tok-" + secrets.token_hex(24)
            set_password(token)
            for path in (env["TOKENS_FILE"], env.get("POSTGATE_TOKEN_LOG")):
                if path:
                    with open(path, "a") as f:
                        f.write(token + "\n")
        self.reply(200, {"token_type": "Bearer", "expires_in": LIFETIME, "ext_expires_in": LIFETIME, "access_token": token})

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(env["CERT"], env["KEY"])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(env["PORT_FILE"], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
