# "nginx -t" refuses bad configuration with a message that names the
# directive, the file and the line.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a zone without a size
--- http_config
    tokenrefresh_zone other;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid zone "other", expected name:size in .*nginx\.conf:\d+/



=== TEST 2: a zone that is too small
--- http_config
    tokenrefresh_zone other:1k;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*zone "other:1k" is too small in .*nginx\.conf:\d+/



=== TEST 3: a credential in a zone that is not declared
--- config
    location /api/ {
        tokenrefresh nosuchzone billing;
        tokenrefresh_login /_login;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown tokenrefresh zone "nosuchzone" in .*nginx\.conf:\d+, declare it with "tokenrefresh_zone"/



=== TEST 4: a credential with no way to get a token
--- config
    location /api/ {
        tokenrefresh tokens billing;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tokenrefresh" in .*nginx\.conf:\d+ needs "tokenrefresh_login" or "tokenrefresh_refresh" in the same or an enclosing block/



=== TEST 5: a token location that is not a URI
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login @login;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid URI "\@login" in "tokenrefresh_login": an internal location's URI starting with "\/" is expected in .*nginx\.conf:\d+/



=== TEST 6: a JSON Pointer that is not one
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_json_access_token data.accessToken;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid JSON Pointer "data\.accessToken" \(RFC 6901\)/



=== TEST 7: a JSON Pointer with a bad escape
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_json_access_token /data/~2;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid JSON Pointer "\/data\/~2"/



=== TEST 8: an expiry unit that does not exist
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_json_expires_at /exp minutes;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid unit "minutes", expected "s" or "ms" in .*nginx\.conf:\d+/



=== TEST 9: a deny status that is not an error status
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_deny_status 200;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*value must be between 400 and 599 in .*nginx\.conf:\d+/



=== TEST 10: a maximum back-off shorter than the minimum
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_backoff 10s 1s;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid maximum back-off time "1s", it must not be less than "10s" in .*nginx\.conf:\d+/



=== TEST 11: a duplicate zone
--- http_config
    tokenrefresh_zone tokens2:1m;
    tokenrefresh_zone tokens2:1m;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*duplicate zone "tokens2" in .*nginx\.conf:\d+/



=== TEST 12: a max_token_size too large for the zone
--- http_config
    tokenrefresh_zone big:64k max_token_size=16k;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*max_token_size=16384 does not leave room for several credentials in zone "big" of 65536 bytes/
