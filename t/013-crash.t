# A worker killed (SIGKILL) while it holds the lease, the provider being
# slow: after the lease deadline another worker takes over, and requests
# waiting in the other workers are served.  Nothing stays wedged.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

master_on();
workers(2);
worker_connections(1024);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: the lease holder is killed; the lease expires; another worker logs in
The refresh deadline is 2 s, so the lease lasts 4 s.  Sixty requests wait
for a login the provider holds for 3 s; the worker that leads it is
killed.  Requests in the other worker are served once its lease has
expired; those in the killed worker lose their connection.
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 2s;
        tokenrefresh_wait_timeout 10s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 3000);
my $log0 = error_log_size();
my $t0 = time;
my @h = map { fire(GET => "/api/$_") } 1 .. 60;
ok(wait_until(sub { calls() =~ /client_credentials=1/ }, 5),
   'the login is in flight');
my ($leader) = pids_in(qr/tokenrefresh: login of credential "billing" started/,
                       error_log_since($log0));
ok($leader, "the lease holder is worker $leader");
mock(delay_ms => 0);
kill 'KILL', $leader;
my @res = map { collect($_, 15) } @h;
my @served = grep { $_->{status} == 200 } @res;
my @lost = grep { $_->{status} == 0 } @res;
note(sprintf "%d served, %d lost with the killed worker", scalar @served,
             scalar @lost);
cmp_ok(scalar @served, '>=', 1, 'requests in the other worker were served');
is(@served + @lost, 60, 'every request was served or lost its connection');
my @late = grep { $_->{elapsed} > scaled(8) } @served;
is(scalar @late, 0, 'served soon after the lease deadline (4 s)');
cmp_ok(time - $t0, '<', scaled(10), 'nothing stayed wedged');
# the killed worker's login was issued tokens 1 and 2 by the provider
like($served[0]{body}, qr/"token_n":3\b/, "with the takeover's token")
    if @served;
--- request
GET /api/after
--- response_body_like: "token_n":3\b
--- error_log eval
qr/tokenrefresh: the lease of worker \d+ on credential "billing" (?:expired|is gone), taking over/
--- no_error_log
[crit]
--- timeout: 20
