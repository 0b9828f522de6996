# A full zone: memory per credential is bounded; idle credentials are
# evicted least recently used first, never one with a lease or waiters;
# when nothing can be evicted the request gets 503 and the log says why.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
worker_connections(1024);
run_tests();

__DATA__

=== TEST 1: a small zone keeps serving many credentials by evicting idle ones
A 32 KB zone holds a few dozen credentials; 120 are used one after the
other, each logging in for 20 ms, so that every credential was used since
it was created.  Every request is served; the first credential, evicted,
logs in again when used again.
--- http_config
    tokenrefresh_zone small:32k max_token_size=1k;
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh small $arg_c;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 20);    # a credential's first use comes after its login
my @st = map { hit(GET => "/api/x?c=cred$_")->{status} } 1 .. 120;
is(scalar(grep { $_ == 200 } @st), 120, 'all 120 served');
my $r = hit(GET => '/api/x?c=cred120');
is($r->{status}, 200, 'the most recent one is still there');
--- request eval
["GET /api/x?c=cred1", "GET /calls"]
--- response_body_like eval
[qr/"cred":"cred1"/, "^calls=121 client_credentials=121\n\$"]
--- error_log eval
qr/tokenrefresh: zone "small" is full, evicting idle credential "cred1"/
--- no_error_log
[error]
[crit]



=== TEST 2: nothing can be evicted: 503 and "zone is full", no crash
The provider never answers: every credential holds a lease for its login.
Once the zone is full of them, a new credential gets 503.
--- http_config
    tokenrefresh_zone small:32k max_token_size=1k;
--- config
    location = /_login {
        internal;
        proxy_read_timeout 1h;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh small $arg_c;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 3s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'hang');
my @h;
my $full;
for my $i (1 .. 200) {
    push @h, fire(GET => "/api/x?c=busy$i");
    wait_until(sub { calls() =~ /calls=$i\b/ || (($full) = grep { /zone "small" is full, no room/ } error_log_since(0)) }, 5);
    last if $full;
}
ok($full, 'the zone filled up after ' . scalar(@h) . ' credentials');
my $r = collect($h[-1], 5);
is($r->{status}, 503, 'the credential that did not fit got 503');
mock(fault => '');
--- request
GET /api/x?c=busy1
--- error_code: 504
--- error_log eval
qr/tokenrefresh: zone "small" is full, no room for credential "busy\d+"/
--- no_error_log
[crit]
[alert]
--- timeout: 20
