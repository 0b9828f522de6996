# Graceful shutdown ("nginx -s quit") does not hang on waiting requests
# beyond the wait limit, even when the provider never answers.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: quit while requests wait for a provider that hangs
Five requests wait for a login the provider never answers; the refresh
deadline and the wait limit are 2 s.  After QUIT the master is gone
within about 2 s, and every client got 504.
--- config
    location = /_login {
        internal;
        proxy_read_timeout 1h;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_wait_timeout 2s;
        tokenrefresh_refresh_timeout 2s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'hang');
my @h = map { fire(GET => "/api/$_") } 1 .. 5;
ok(wait_until(sub { calls() =~ /client_credentials=1/ }, 5),
   'the login is in flight');
my $master = master_pid();
my $t0 = time;
kill 'QUIT', $master;
ok(wait_until(sub { !alive($master) }, 10), 'nginx exited');
my $took = time - $t0;
note(sprintf "nginx exited %.2f s after QUIT", $took);
cmp_ok($took, '<', scaled(3.5), 'within the wait limit and a margin');
my @st = map { collect($_, 5)->{status} } @h;
is("@st", '504 504 504 504 504', 'every waiting client got 504');

# start it again for the rest of the block
start_nginx();
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- error_log eval
qr/no answer from the token endpoint within @{[ scaled(2000) ]} ms/
