# The upstream rejects a token (revoked, rotated, a clock that disagrees):
# nothing of the 401 reaches the client; one refresh; the request goes
# again, with its body, at most once.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;

    # the token locations every block here uses
    $block->set_value('config', <<'_EOC_' . $block->config);
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a revoked token: one refresh, the request goes again, the client sees 200
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
revoke();
$r = hit(GET => '/api/b?x=1');
is($r->{status}, 200, 'no 401 reached the client');
like($r->{content}, qr/"token_n":3\b.*/, 'sent again with the new token');
like($r->{content}, qr/"query":"x=1"/, 'with its arguments');
my @seen = api_requests('/api/b');
is(scalar @seen, 2, 'the API saw the request twice');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 2: a POST goes again with its body
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
my $body = join ',', map { "item-$_" } 1 .. 200;
my $r = hit(POST => '/api/orders', body => $body,
            headers => { 'Content-Type' => 'text/plain' });
is($r->{status}, 200, 'answered');
like($r->{content}, qr/"method":"POST"/, 'as a POST');
like($r->{content}, qr/"body_sha":"@{[ sha256_hex($body) ]}"/, 'body intact');
my @seen = api_requests('/api/orders');
is(scalar @seen, 2, 'twice at the API');
is($seen[1]{body_sha}, sha256_hex($body), 'the second with the same body');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 3: a large body from the client body temp file goes again intact
--- config
    client_body_buffer_size 8k;

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
my $body = join '', map { sprintf "%07d\n", $_ } 1 .. 50000;   # 400 KB
my $r = hit(PUT => '/api/upload', body => $body);
is($r->{status}, 200, 'answered');
like($r->{content}, qr/"body_sha":"@{[ sha256_hex($body) ]}"/, 'body intact');
like($r->{content}, qr/"body_len":400000\b/, '400000 bytes');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- error_log
a client request body is buffered to a temporary file
--- no_error_log
[error]



=== TEST 4: proxy_request_buffering off: the 401 passes through, with a warning
The body goes to the upstream as it arrives (the second half only once
the upstream has the first); it cannot be sent again.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_request_buffering off;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
my $h = fire(POST => '/api/stream',
             headers => { 'Content-Length' => 20000 },
             body => 'a' x 10000);
ok(wait_until(sub { grep { $_ eq '/api/stream' } receiving() }, 5),
   'the upstream got the head and the first half');
print { $h->{sock} } 'b' x 10000;
my $r = collect($h);
is($r->{status}, 401, 'the 401 passes through');
is($r->{body}, "api: revoked token\n", "the API's own body");
is(scalar(api_requests('/api/stream')), 1, 'not sent again');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- error_log
the request body was streamed to it (proxy_request_buffering off) and cannot be sent again



=== TEST 5: proxy_request_buffering off, without a body: replayed
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_request_buffering off;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
--- request
GET /api/b
--- response_body_like: "token_n":3\b
--- no_error_log
[error]



=== TEST 6: the loop guard: an API that rejects every token
The client gets the API's own 401, status, body and WWW-Authenticate,
after exactly two attempts.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
mock(api_reject => 1);
--- request
GET /api/b
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer error="invalid_token"
--- response_body
api: rejected
--- error_log
the upstream rejected again the token of credential "billing" with status 401; the request is not replayed: it was sent again already, passing the answer to the client
--- no_error_log
[error]



=== TEST 7: (TEST 6, counted) two attempts at the API, one refresh
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
mock(api_reject => 1);
my $r = hit(GET => '/api/b');
is($r->{status}, 401, 'the API said no');
is(scalar(api_requests('/api/b')), 2, 'exactly two attempts');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 8: the loop guard under steady traffic: refreshes are bounded
The API rejects every token, fresh ones too.  For six seconds, one
request after another: each gets the API's 401 after two attempts, and
refreshes back off (0.5 s, 1 s, 2 s ...), logged once per back-off.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 1s;
        tokenrefresh_backoff 500ms 2s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.1) }, 3);    # the first token is not fresh
mock(api_reject => 1);
my $n = 0;
my $end = time + scaled(6);
my $bad = 0;
while (time < $end) {
    my $r = hit(GET => "/api/steady/$n");
    $bad++ unless $r->{status} == 401;
    $n++;
}
cmp_ok($n, '>', 50, "$n requests");
is($bad, 0, 'each got the 401');
my $by_path = stats()->{api_by_path};
my %attempts = map { $_ => $by_path->{$_} } grep { m{^/api/steady/} }
               keys %$by_path;
my @odd = grep { $attempts{$_} != 2 } sort keys %attempts;
is(scalar @odd, 0, 'each after exactly two attempts')
    or diag(join ', ', map { "$_: $attempts{$_}" } @odd);
my $refreshes = (calls() =~ /refresh_token=(\d+)/)[0] // 0;
note("$n requests, $refreshes refreshes");
cmp_ok($refreshes, '<=', 8, 'refreshes are bounded by the back-off');
cmp_ok($refreshes, '>=', 1, 'the first rejection did refresh');
--- request
GET /api/x
--- error_code: 401
--- error_log eval
qr/the upstream rejected a token of credential "billing" that is \d+ ms old, younger than tokenrefresh_min_token_age: no refresh for it \(said once per \d+ ms\)/



=== TEST 9: a straggler: its 401 arrives after the token was replaced, no second refresh
Request A is held at the API for a second.  Meanwhile the token is
revoked and request B refreshes it.  A's 401 then comes back: A goes again
with B's new token, and the provider sees one refresh.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
my $a = fire(GET => '/api/slow?delay=1000');
ok(wait_until(sub { api_requests('/api/slow') == 1 }, 5), 'A at the API');
revoke();
my $b = hit(GET => '/api/b');
like($b->{content}, qr/"token_n":3\b/, 'B refreshed');
my $r = collect($a);
is($r->{status}, 200, 'A answered');
like($r->{body}, qr/"token_n":3\b/, "A went again with B's token");
is(scalar(api_requests('/api/slow')), 2, 'A: two attempts');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 10: a request that came through error_page goes again correctly
--- config
    location = /entry {
        error_page 404 = /api/from-error-page;
        return 404;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
--- request
GET /entry
--- response_body_like: "path":"/api/from-error-page".*"token_n":3\b
--- no_error_log
[error]



=== TEST 11: other statuses, and locations without the module, are untouched
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /plain/ {
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/api/status/403');
is($r->{status}, 403, '403 passes through');
is(scalar(api_requests('/api/status/403')), 1, 'once');
$r = hit(GET => '/plain/x');
is($r->{status}, 401, "a 401 without the module passes through");
is(scalar(api_requests('/plain/x')), 1, 'once');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 12: more statuses can mean "token rejected"
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        tokenrefresh_rejected_status 401 403;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
--- request
GET /api/status/403
--- error_code: 403
--- response_body_like: "token_n":3\b
--- no_error_log
[error]



=== TEST 13: tokenrefresh_replay off: the 401 passes through
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_replay off;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
--- request eval
["GET /api/b", "GET /calls"]
--- error_code eval
[401, 200]
--- response_body eval
["api: revoked token\n", "calls=1 client_credentials=1\n"]



=== TEST 14: a waiting client that goes away is dropped; the others are served
The first request leads the refresh (the provider takes a second); the
second waits and hangs up; the third waits and gets its answer.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
mock(delay_ms => 1000);
my $leader = fire(GET => '/api/lead');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5), 'refresh started');
my $quitter = fire(GET => '/api/quit');
my $waiter = fire(GET => '/api/wait');
ok(wait_until(sub { api_requests('/api/quit') && api_requests('/api/wait') },
              5), 'both were sent and rejected');
drop($quitter);
my $r = collect($leader);
is($r->{status}, 200, 'the leader is served');
$r = collect($waiter);
is($r->{status}, 200, 'the other waiter is served');
is(scalar(api_requests('/api/quit')), 1, 'the dropped one is not sent again');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
[alert]
[crit]



=== TEST 15: over HTTP/1.0 and on a keepalive connection
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
--- pipelined_requests eval
["GET /api/one", "POST /api/two\nbody-two", "GET /api/three"]
--- response_body_like eval
[qr/"path":"\/api\/one".*"token_n":3\b/,
 qr/"method":"POST".*"path":"\/api\/two".*"token_n":3\b/,
 qr/"path":"\/api\/three".*"token_n":3\b/]
--- no_error_log
[error]



=== TEST 16: over HTTP/2, a POST goes again with its body
--- config
    listen 127.0.0.1:$TEST_NGINX_H2_PORT http2;

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
hit(GET => '/api/a');
revoke();
my $url = "http://127.0.0.1:$ENV{TEST_NGINX_H2_PORT}";
my $curl = "curl -s --http2-prior-knowledge -w '\\n%{http_version} %{http_code}'";
my @post = split /\n/, `$curl -d h2-body $url/api/h2post`;
is($post[1], '2 200', 'a POST over HTTP/2: 200');
like($post[0], qr/"body_sha":"@{[ sha256_hex('h2-body') ]}".*"method":"POST"/,
     'with its body');
my @get = split /\n/, `$curl $url/api/h2get`;
is($get[1], '2 200', 'a GET over HTTP/2: 200');
like($get[0], qr/"token_n":3\b/, 'with the new token');
is(scalar(api_requests('/api/h2post')), 2, 'the POST went twice');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 17: with an upstream keepalive pool, the rejected answer's connection is never reused half-read
The API's 401 has a body; the module does not read it, so that
connection is closed rather than cached.  Everything that follows on the
pool works.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
for my $i (1 .. 3) {
    is(hit(GET => "/api/warm/$i")->{status}, 200, "warm-up $i");
}
revoke();
my @st = map { hit(GET => "/api/after/$_")->{status} } 1 .. 10;
is("@st", join(' ', (200) x 10), 'all answered through the pool');
is(scalar(api_requests('/api/after/1')), 2, 'the first went twice');
is(scalar(api_requests('/api/after/2')), 1, 'the next ones once');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
