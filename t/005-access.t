# The module runs after nginx's access control has decided: it never
# grants access, and a request that nginx refuses never causes a login.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: satisfy any, the client neither allowed nor authenticated: 401, no login
--- user_files
>>> htpasswd
ops:{PLAIN}s3cret
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        satisfy any;
        allow 192.0.2.1;
        deny all;
        auth_basic "api";
        auth_basic_user_file ../html/htpasswd;

        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /calls"]
--- error_code eval
[401, 200]
--- response_body_like eval
[qr/401 Authorization Required/, "^calls=0\n\$"]



=== TEST 2: satisfy any, the client authenticated: the token is attached
The client's Basic credentials are replaced by the token upstream.
--- user_files
>>> htpasswd
ops:{PLAIN}s3cret
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        satisfy any;
        allow 192.0.2.1;
        deny all;
        auth_basic "api";
        auth_basic_user_file ../html/htpasswd;

        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- more_headers
Authorization: Basic b3BzOnMzY3JldA==
--- request eval
["GET /api/a", "GET /calls"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"style":"bearer"/, "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]



=== TEST 3: deny all: 403, no login
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        deny all;

        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /calls"]
--- error_code eval
[403, 200]
--- response_body_like eval
[qr/403 Forbidden/, "^calls=0\n\$"]



=== TEST 4: auth_request refuses: 403, no login
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /check {
        internal;
        return 403;
    }

    location /api/ {
        auth_request /check;

        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /calls"]
--- error_code eval
[403, 200]
--- response_body_like eval
[qr/403 Forbidden/, "^calls=0\n\$"]



=== TEST 5: satisfy any, allowed by address: the token is attached
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        satisfy any;
        allow 127.0.0.1;
        deny all;
        auth_basic "api";
        auth_basic_user_file ../html/htpasswd;

        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /calls"]
--- response_body_like eval
[qr/"style":"bearer"/, "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]
