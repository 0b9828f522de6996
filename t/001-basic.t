# The token lifecycle in one worker: login on first use, reuse, formats.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;


no_shuffle();
run_tests();

__DATA__

=== TEST 1: the first request logs in, the API gets the token
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /calls"]
--- response_body_like eval
[qr/"cred":"billing".*"style":"bearer"/, "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]
