#!/usr/bin/env python3
"""Registers a user through the shared-secret admin API, /_synapse/admin/v1/register (stdlib only).

As Synapse documents it: GET a nonce, then POST it with
mac = HMAC-SHA1(secret, nonce \\0 username \\0 password \\0 ("admin" | "notadmin")) in hex.
Served by Synapse (registration_shared_secret) and by other servers that copy the API.
An existing user (M_USER_IN_USE) counts as success.

  python3 bench/register.py --url http://127.0.0.1:8008 --secret S --user bench --password P
"""
import argparse
import hashlib
import hmac
import json
import urllib.error
import urllib.request


def call(url, method="GET", body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw[:200]


def register(base, secret, user, password, admin=False):
    """Returns the new user's ID, or None if the user already existed."""
    body = register_account(base, secret, user, password, admin)
    return body["user_id"] if body else None


def register_account(base, secret, user, password, admin=False):
    """Returns the server's answer (user_id, access_token, device_id), or None if the user already existed."""
    endpoint = f"{base}/_synapse/admin/v1/register"
    status, body = call(endpoint)
    if status != 200:
        raise SystemExit(f"GET {endpoint}: {status} {body}")
    nonce = body["nonce"]
    msg = "\0".join([nonce, user, password, "admin" if admin else "notadmin"]).encode()
    mac = hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()
    status, body = call(endpoint, "POST", {"nonce": nonce, "username": user, "password": password,
                                           "admin": admin, "mac": mac})
    if status == 200:
        return body
    if isinstance(body, dict) and body.get("errcode") == "M_USER_IN_USE":
        return None
    raise SystemExit(f"POST {endpoint}: {status} {body}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--admin", action="store_true")
    a = p.parse_args()
    print(register(a.url, a.secret, a.user, a.password, a.admin) or f"{a.user} already exists")


if __name__ == "__main__":
    main()
