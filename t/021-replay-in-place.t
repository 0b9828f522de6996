# A rejected request goes again as it was sent the first time: same
# location, same request line bytes, same headers but Authorization, same
# body; rewrite, set, auth_request, try_files and mirror do not run again.
# Rejections are recorded even when a request cannot be replayed.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();

no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;

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

    location = /status {
        tokenrefresh_status;
    }
_EOC_
});

# both attempts of a replay, as the API saw them
sub attempts {
    my ($path) = @_;
    return grep { $_->{port} eq 'api' && $_->{path} eq $path }
           @{ requests() };
}

# the header lines an attempt carried, Authorization left out
sub headers_but_auth {
    my ($req) = @_;
    return join "\n", map { "$_->[0]: $_->[1]" }
                      grep { lc $_->[0] ne 'authorization' } @{ $req->{raw} };
}

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(attempts headers_but_auth);
}

run_tests();

__DATA__

=== TEST 1: rewrite ... break: the replay goes to the rewritten URI once, not rewritten again
--- config
    location /rw/ {
        rewrite ^/rw/(.*)$ /rw/v2/$1 break;
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/rw/a')->{status}, 200, 'logged in');
revoke();
my $r = hit(GET => '/rw/x?a=1');
is($r->{status}, 200, 'no 401 reached the client');
like($r->{content}, qr{"path":"/rw/v2/x"}, 'answered for /rw/v2/x');
my @a = attempts('/rw/v2/x');
is(scalar @a, 2, 'both attempts at /rw/v2/x');
is($a[1]{line}, $a[0]{line}, 'the same request line: ' . $a[0]{line});
is(scalar(attempts('/rw/v2/v2/x')), 0, 'never at /rw/v2/v2/x');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 2: set $args in the location: the arguments are not appended twice
--- config
    location /args/ {
        set $args "${args}&n=1";
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/args/a')->{status}, 200, 'logged in');
revoke();
my $r = hit(GET => '/args/x?a=1');
is($r->{status}, 200, 'replayed');
my @a = attempts('/args/x');
is(scalar @a, 2, 'two attempts');
is($a[0]{query}, 'a=1&n=1', 'first with a=1&n=1');
is($a[1]{query}, 'a=1&n=1', 'second with a=1&n=1 too');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 3: a rewrite into the URI space of another location: the replay stays in this one
--- config
    location /svc/ {
        rewrite ^/svc/(.*)$ /api/$1 break;
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /api/ {
        return 404;
    }
--- init
is(hit(GET => '/svc/a')->{status}, 200, 'logged in');
revoke();
my $r = hit(GET => '/svc/x');
is($r->{status}, 200, 'replayed in /svc/, not sent to /api/');
is(scalar(attempts('/api/x')), 2, 'both attempts reached the API');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 4: an encoded slash is sent again encoded: a DELETE acts on the same resource
--- config
    location /repos/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/repos/a')->{status}, 200, 'logged in');
revoke();
my $r = hit(DELETE => '/repos/acme%2Fwidgets');
is($r->{status}, 200, 'replayed');
my @a = grep { $_->{method} eq 'DELETE' } @{ requests() };
is(scalar @a, 2, 'two DELETEs');
is($a[0]{path}, '/repos/acme%2Fwidgets', 'the first encoded');
is($a[1]{path}, '/repos/acme%2Fwidgets', 'the second encoded too');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 5: error_page 404 = @app with the module in @app: the replay happens in @app
The classic "static file, else the app".
--- config
    location /static/ {
        root html;
        error_page 404 = @app;
    }

    location @app {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/static/a')->{status}, 200, 'logged in through @app');
revoke();
my $r = hit(GET => '/static/x');
is($r->{status}, 200, 'replayed in @app');
is(scalar(attempts('/static/x')), 2, 'two attempts at the API');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 6: auth_request and mirror are not called again for the replay
--- config
    location /guarded/ {
        auth_request /_auth;
        mirror /_mirror;
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_auth {
        internal;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://idp/_mock/echo/auth;
    }

    location = /_mirror {
        internal;
        proxy_pass http://idp/_mock/echo/mirror;
    }
--- init
is(collect(fire(GET => '/guarded/a'))->{status}, 200, 'logged in');
revoke();
my $n0 = scalar @{ requests() };
# the client reads until the connection closes: after the mirror is done
my $r = collect(fire(GET => '/guarded/x'));
is($r->{status}, 200, 'replayed');
my @all = @{ requests() };
@all = @all[$n0 .. $#all];
is(scalar(grep { $_->{path} eq '/guarded/x' } @all), 2, 'two attempts');
is(scalar(grep { $_->{path} eq '/_mock/echo/auth' } @all), 1,
   'one call to the auth service');
is(scalar(grep { $_->{path} eq '/_mock/echo/mirror' } @all), 1,
   'one mirrored request');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 7: try_files is not run again: the replay goes to the same named location
The file appears while the first attempt is at the API: a replay that ran
try_files again would serve the file instead of going to the API.
--- config
    location /files/ {
        root html;
        try_files $uri @backend;
    }

    location @backend {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/files/a')->{status}, 200, 'logged in through @backend');
revoke();
my $h = fire(GET => '/files/x?delay=300');
ok(wait_until(sub { scalar attempts('/files/x') }, 5), 'at the API');
my $file = "$Test::Nginx::Util::ServRoot/html/files/x";
mkdir "$Test::Nginx::Util::ServRoot/html/files";
open my $fh, '>', $file or die "$file: $!";
print $fh "a static file\n";
close $fh;
my $r = collect($h);
unlink $file;
is($r->{status}, 200, 'replayed');
like($r->{body}, qr/"path":"\/files\/x"/, 'by the API, not from the file');
my @a = attempts('/files/x');
is(scalar @a, 2, 'two attempts');
is($a[1]{line}, $a[0]{line}, 'the same request line');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 8: the same request, byte for byte but Authorization, over HTTP/1.1
--- config
    client_body_buffer_size 4k;

    location /same/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/same/a')->{status}, 200, 'logged in');
revoke();
my $body = join '', map { chr(($_ * 7) % 256) } 1 .. 20000;
my $r = collect(fire(PATCH => '/same/it%2Fem;v=2?b=%20x&a=1',
                     body => $body,
                     headers => { 'Content-Type' => 'application/octet-stream',
                                  'X-Trace' => 'abc', 'Accept' => '*/*',
                                  'Cookie' => 'a=1; b=2' }));
is($r->{status}, 200, 'replayed');
my @a = grep { $_->{method} eq 'PATCH' } @{ requests() };
is(scalar @a, 2, 'two attempts');
is($a[1]{line}, $a[0]{line}, "the same request line: $a[0]{line}");
is(headers_but_auth($a[1]), headers_but_auth($a[0]),
   'the same headers but Authorization');
is($a[0]{body_sha}, sha256_hex($body), 'the body the client sent');
is($a[1]{body_sha}, $a[0]{body_sha}, 'the same body');
isnt($a[1]{headers}{authorization}, $a[0]{headers}{authorization},
     'another token');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 9: the same request, byte for byte but Authorization, over HTTP/2
--- config
    listen 127.0.0.1:$TEST_NGINX_H2_PORT http2;

    location /same/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $url = "http://127.0.0.1:$ENV{TEST_NGINX_H2_PORT}";
my $curl = "curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}'";
is(`$curl $url/same/a`, '2 200', 'logged in over HTTP/2');
revoke();
my $dir = File::Temp::tempdir(CLEANUP => 1);
my $body = join '', map { chr(($_ * 13) % 256) } 1 .. 30000;
open my $fh, '>:raw', "$dir/body" or die;
print $fh $body;
close $fh;
is(`$curl -X PUT -H 'X-Trace: h2' -H 'Content-Type: application/x-bin' --data-binary \@$dir/body '$url/same/b%2Fc?x=1&y=%7E'`,
   '2 200', 'replayed over HTTP/2');
my @a = grep { $_->{method} eq 'PUT' } @{ requests() };
is(scalar @a, 2, 'two attempts');
is($a[1]{line}, $a[0]{line}, "the same request line: $a[0]{line}");
is(headers_but_auth($a[1]), headers_but_auth($a[0]),
   'the same headers but Authorization');
is($a[0]{body_sha}, sha256_hex($body), 'the body the client sent');
is($a[1]{body_sha}, $a[0]{body_sha}, 'the same body');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 10: proxy_intercept_errors with error_page 401: the rejection is recorded
The client gets the error page (nothing can be replayed once nginx has
taken over the answer); the next request gets a new token.
--- config
    location /ie/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_intercept_errors on;
        error_page 401 = @denied;
        proxy_pass http://api;
    }

    location @denied {
        return 418;
    }
--- init
is(hit(GET => '/ie/a')->{status}, 200, 'logged in');
revoke();
is(hit(GET => '/ie/b')->{status}, 418, 'the error page');
--- request
GET /ie/c
--- response_body_like: "token_n":3\b
--- error_log
was intercepted by an error_page, it is not replayed
--- no_error_log
[error]



=== TEST 11: a streamed body cannot go again, but the rejection is recorded: the next upload has the new token
A location that only takes streamed uploads must not keep getting 401
until the token expires.
--- config
    location /up/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_request_buffering off;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/up/a')->{status}, 200, 'logged in');
revoke();
for my $n (1, 2) {
    my $h = fire(POST => "/up/stream$n",
                 headers => { 'Content-Length' => 20000 },
                 body => 'a' x 10000);
    ok(wait_until(sub { grep { $_ eq "/up/stream$n" } receiving() }, 5),
       "upload $n: the upstream got the first half");
    print { $h->{sock} } 'b' x 10000;
    my $r = collect($h);
    if ($n == 1) {
        is($r->{status}, 401, 'the first upload gets the 401');
    } else {
        is($r->{status}, 200, 'the second upload has the new token');
        like($r->{body}, qr/"token_n":3\b/, 'the refreshed one');
    }
}
my $st = JSON::PP::decode_json(hit(GET => '/status')->{content});
is($st->{zones}{tokens}{credentials}{billing}{replays_refused}, 1,
   'counted as a replay refused');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- error_log
the request body was streamed to it (proxy_request_buffering off) and cannot be sent again
--- no_error_log
[error]



=== TEST 12: tokenrefresh_replay_methods: a POST is not replayed, its rejection is recorded
--- config
    location /m/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_replay_methods GET HEAD PUT DELETE;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/m/a')->{status}, 200, 'logged in');
revoke();
is(hit(POST => '/m/b', body => 'x')->{status}, 401, 'the POST gets the 401');
is(scalar(attempts('/m/b')), 1, 'sent once');
is(hit(POST => '/m/c', body => 'x')->{status}, 200,
   'the next POST has the new token');
revoke();
is(hit(GET => '/m/d')->{status}, 200, 'a GET is replayed');
is(scalar(attempts('/m/d')), 2, 'sent twice');
--- request
GET /calls
--- response_body
calls=3 client_credentials=1 refresh_token=2
--- error_log
is not replayed: tokenrefresh_replay_methods



=== TEST 13: the 401 set a limit_rate: the replay's answer is not throttled
--- config
    location /lr/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/lr/a')->{status}, 200, 'logged in');
revoke();
mock(api_limit_rate => 1);
my $r = hit(GET => '/lr/b');
is($r->{status}, 200, 'replayed');
cmp_ok($r->{elapsed}, '<', 2, 'at full speed (a byte a second would take minutes)');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1



=== TEST 14: the replayed request is logged once, with the replay's status
--- http_config
    log_format tr '$request_uri $status $tokenrefresh_outcome $upstream_status';
--- config
    access_log logs/tr.log tr;

    location /lg/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/lg/a')->{status}, 200, 'logged in');
revoke();
is(hit(GET => '/lg/b')->{status}, 200, 'replayed');
my $log = "$Test::Nginx::Util::ServRoot/logs/tr.log";
my @lines;
ok(wait_until(sub {
    open my $fh, '<', $log or return 0;
    @lines = grep { m{^/lg/b } } <$fh>;
    return scalar @lines;
}, 5), 'logged');
is(scalar @lines, 1, 'once');
like($lines[0], qr{^/lg/b 200 replayed 401 : 200$}, 'status 200, both upstream answers');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
