#!/bin/bash
# A short, readable demonstration: nginx with the module in front of a mock
# API, a mock identity provider that answers in 300 ms and issues tokens
# that live 5 seconds.  Everything runs on loopback and is stopped at the
# end.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
so=$top/build/ngx_http_tokenrefresh_module.so
dir=$top/build/demo
nginx_port=${DEMO_PORT:-18080}
idp_port=${DEMO_IDP_PORT:-18850}
api_port=${DEMO_API_PORT:-18860}

[ -f "$so" ] || "$top/scripts/build.sh"

rm -rf "$dir"
mkdir -p "$dir/logs"

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
calls() { curl -s "http://127.0.0.1:$idp_port/_mock/calls"; }

cleanup() {
    [ -f "$dir/logs/nginx.pid" ] && kill "$(cat "$dir/logs/nginx.pid")" 2>/dev/null
    [ -n "${mock_pid:-}" ] && kill "$mock_pid" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT

cat > "$dir/nginx.conf" <<EOF
load_module $so;

worker_processes 2;
error_log $dir/logs/error.log info;
pid $dir/logs/nginx.pid;

events { worker_connections 1024; }

http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;

    tokenrefresh_zone tokens:1m;
    tokenrefresh_zone users:4m;

    upstream idp { server 127.0.0.1:$idp_port; }
    upstream api { server 127.0.0.1:$api_port; keepalive 16; }

    server {
        listen 127.0.0.1:$nginx_port;

        # the app calls /api/... with no token at all
        location /api/ {
            tokenrefresh         tokens orders-service;
            tokenrefresh_login   /_login;
            tokenrefresh_refresh /_refresh;
            tokenrefresh_ahead   1s;

            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://api;
        }

        # OAuth 2.0 client credentials
        location = /_login {
            internal;
            proxy_set_body "grant_type=client_credentials&client_id=\$tokenrefresh_credential&client_secret=demo";
            proxy_pass http://idp/token;
        }

        # refresh_token grant
        location = /_refresh {
            internal;
            proxy_set_body "grant_type=refresh_token&refresh_token=\$tokenrefresh_refresh_token_form";
            proxy_pass http://idp/token;
        }

        # the app's users: a login through nginx, a handle instead of tokens
        location = /login {
            tokenrefresh_session_login users;
            tokenrefresh_session_handle_json session;
            tokenrefresh_json_access_token  /token;
            tokenrefresh_json_refresh_token /refreshToken;
            tokenrefresh_json_expires_in    /expiresIn;
            proxy_set_header Accept-Encoding "";
            proxy_pass http://idp/api/tokens;
        }

        location /me/ {
            tokenrefresh_session users;
            tokenrefresh_session_header X-Session;
            tokenrefresh_refresh /_user_refresh;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://api;
        }

        location = /_user_refresh {
            internal;
            tokenrefresh_json_access_token  /token;
            tokenrefresh_json_refresh_token /refreshToken;
            proxy_set_header Content-Type application/json;
            proxy_set_body '{"refreshToken":"\$tokenrefresh_refresh_token_json"}';
            proxy_pass http://idp/api/tokens/refresh;
        }
    }
}
EOF

perl "$top/t/lib/mock_server.pl" --idp-port "$idp_port" --api-port "$api_port" \
    > /dev/null &
mock_pid=$!

for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$idp_port/_mock/calls" && break
    sleep 0.05
done

curl -s -XPOST "http://127.0.0.1:$idp_port/_mock/config" \
     -d '{"delay_ms": 300, "lifetime": 5}' > /dev/null

/usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf"

for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break
    sleep 0.05
done

say "1. The app sends a request without any token; nginx logs in first"
echo "$ curl http://127.0.0.1:$nginx_port/api/orders/1"
curl -s -w '\n(HTTP %{http_code} in %{time_total} s)\n' \
     "http://127.0.0.1:$nginx_port/api/orders/1"
echo "identity provider: $(calls)"

say "2. Ten more requests reuse the stored token"
for i in $(seq 2 11); do
    curl -s -o /dev/null -w "%{http_code} " \
         "http://127.0.0.1:$nginx_port/api/orders/$i"
done
echo
echo "identity provider: $(calls)"

say "3. The token expires (it lives 5 s); 100 requests arrive at once"
sleep 5.2
args=()
for i in $(seq 100); do
    args+=(-o /dev/null "http://127.0.0.1:$nginx_port/api/orders/$i")
done
curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 100 \
     -w '%{http_code}\n' "${args[@]}" | sort | uniq -c |
    awk '{ printf "%s answers with status %s\n", $1, $2 }'
echo "identity provider: $(calls)    <- one refresh for 100 requests"

say "4. The app's user logs in through nginx: the answer has no token, only a session handle"
echo "$ curl -d '{\"email\":\"ann@example.com\",...}' http://127.0.0.1:$nginx_port/login"
login=$(curl -s -H 'Content-Type: application/json' \
             -d '{"email":"ann@example.com","password":"secret-ann@example.com"}' \
             "http://127.0.0.1:$nginx_port/login")
echo "$login"
handle=$(echo "$login" | sed -n 's/.*"session":"\([A-Za-z0-9_-]*\)".*/\1/p')
echo "$ curl -H 'X-Session: <handle>' http://127.0.0.1:$nginx_port/me/profile"
curl -s -w '\n(HTTP %{http_code})\n' -H "X-Session: $handle" \
     "http://127.0.0.1:$nginx_port/me/profile"

say "5. The user's token expires; the app's next request just works"
sleep 5.2
curl -s -o /dev/null -w '(HTTP %{http_code})\n' -H "X-Session: $handle" \
     "http://127.0.0.1:$nginx_port/me/profile"
echo "identity provider: $(calls)    <- the user's session refreshed once"
echo "$ curl -H 'X-Session: <a handle nobody issued>' .../me/profile"
curl -s -w '\n(HTTP %{http_code})\n' -H "X-Session: $(printf 'A%.0s' $(seq 43))" \
     "http://127.0.0.1:$nginx_port/me/profile"

say "6. What the module logged (info level; never a token, only a fingerprint)"
grep 'tokenrefresh:' "$dir/logs/error.log" |
    sed 's/^.*\] [0-9#]*: \*[0-9]* /  /; s/ while .*//'

say "Stopping nginx and the mock servers."
