# A token request belongs to the worker, not to the client that noticed
# the need for it: no client that hangs up, times out or fails to read its
# answer can cancel a refresh that was sent, and a refresh ahead of expiry
# delays neither the client that started it nor the next request on its
# connection.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use IO::Socket::INET;
use IO::Select;
use File::Temp ();

master_on();
workers(2);
worker_connections(1024);
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
_EOC_
});

my $dir = File::Temp::tempdir('tokenrefresh-w-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
{
    open my $fh, '>', "$dir/key" or die "$dir/key: $!";
    print $fh join('', map { sprintf '%02x', int rand 256 } 1 .. 32), "\n";
    close $fh;
    chmod 0600, "$dir/key";
}
$ENV{TEST_NGINX_STATE_FILE} = "$dir/w.state";
$ENV{TEST_NGINX_KEY_FILE} = "$dir/key";

# one keepalive connection: send a request, read one answer
sub ka_open {
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $Test::Nginx::Util::ServerPortForClient,
                                 Timeout => 5) or die "connect: $!";
}

sub ka_get {
    my ($s, $uri) = @_;
    my $t0 = time;
    print $s "GET $uri HTTP/1.1\r\nHost: localhost\r\n\r\n";
    my $in = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + 20;
    while (time < $deadline) {
        if ($in =~ /\r\n\r\n/s) {
            my ($head, $body) = split /\r\n\r\n/, $in, 2;
            my ($len) = $head =~ /Content-Length: (\d+)/i;
            last if defined $len && length $body >= $len;
        }
        next unless $sel->can_read(0.2);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $in .= $buf;
    }
    my $r = t::TokenRefresh::parse_response($in);
    $r->{elapsed} = time - $t0;
    return $r;
}

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(ka_open ka_get);
}

run_tests();

__DATA__

=== TEST 1: the client hangs up while the refresh it started is at a rotating provider: no refresh token is sent twice
The token is close to expiry: the client's request goes on to the API
with it, and starts a refresh ahead of expiry.  The client gives up on
the slow API; the refresh must go on.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 1h;
        tokenrefresh_refresh_timeout 8s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 4, rotate => 1);
my $t0 = time;
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 1000, lifetime => 3600);
ok(wait_until(sub { time - $t0 > scaled(2.1) }, 5), 'inside the window');
my $h = fire(GET => '/api/slow?delay=3000');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5),
   'the refresh is at the provider');
drop($h);
ok(wait_until(sub { hit(GET => '/api/c')->{content} =~ /"token_n":3\b/ }, 10),
   'the token of that refresh is used');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
abandoned
--- timeout: 20



=== TEST 2: twenty clients that give up inside the refresh-ahead window: one refresh
Each client waits for a slow answer from the API and hangs up; the first
one noticed that the token is close to expiry and started a refresh.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 1h;
        tokenrefresh_refresh_timeout 8s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 4);
my $t0 = time;
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 1000, rotate => 1, lifetime => 3600);
# the window opens at half-life
ok(wait_until(sub { time - $t0 > scaled(2.1) }, 5), 'inside the window');
for my $i (1 .. 20) {
    my $h = fire(GET => "/api/slow$i?delay=3000");
    ok(wait_until(sub { grep { $_->{path} eq "/api/slow$i" } @{ requests() } }, 5),
       "client $i is at the API");
    drop($h);
}
ok(wait_until(sub { hit(GET => '/api/check')->{content} =~ /"token_n":3\b/ }, 10),
   'the refresh was stored');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
--- timeout: 30



=== TEST 3: a refresh ahead of expiry at a slow provider delays neither its client nor the next request on the connection
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 1h;
        tokenrefresh_refresh_timeout 8s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 4);
my $t0 = time;
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 3000, lifetime => 3600);
ok(wait_until(sub { time - $t0 > scaled(2.1) }, 5), 'inside the window');
my $s = ka_open();
my $r1 = ka_get($s, '/api/one');
is($r1->{status}, 200, 'the first request is served');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5), 'its refresh is at the provider');
my $r2 = ka_get($s, '/api/two');
is($r2->{status}, 200, 'the second request on the connection too');
cmp_ok($r2->{elapsed}, '<', 1, 'without waiting for the token endpoint');
like($r2->{body}, qr/"token_n":1\b/, 'with the current token');
close $s;
ok(wait_until(sub { hit(GET => '/api/check')->{content} =~ /"token_n":3\b/ }, 10),
   'the refresh was stored');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
--- timeout: 30



=== TEST 4: the deadline stops a refresh that is still waiting in limit_req: it is never sent late
A refresh that waits longer than tokenrefresh_refresh_timeout is stopped
where it is, before it has an upstream; the provider never receives it.
--- http_config
    limit_req_zone $tokenrefresh_credential zone=tokencalls:1m rate=2r/m;
--- config
    location = /_slow_refresh {
        internal;
        limit_req zone=tokencalls burst=10;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_slow_refresh;
        tokenrefresh_refresh_timeout 1s;
        tokenrefresh_backoff 2s 2s;
        tokenrefresh_failure_status 503 timeout=504;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
revoke();
# the first refresh passes limit_req; the next ones wait 30 s each
is(hit(GET => '/api/b')->{status}, 200, 'the first refresh went through');
revoke();
my $log0 = error_log_size();
my $r = hit(GET => '/api/c');
is($r->{status}, 504, 'the refresh waiting in limit_req timed out');
ok(!wait_until(sub { calls() =~ /refresh_token=2/ }, 4),
   'the provider never received it');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- error_log eval
qr/no answer from the token endpoint within \d+ ms/
--- timeout: 20



=== TEST 5: a token location sees none of the client's request: its variables are empty there
--- config
    location = /_login_echo {
        internal;
        proxy_set_header X-Client-Header "[$http_x_secret]";
        proxy_set_header X-Client-Arg "[$arg_k]";
        proxy_set_header X-Credential "[$tokenrefresh_credential]";
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login_echo;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/api/a?k=v', headers => { 'X-Secret' => 'cookie-ish' });
is($r->{status}, 200, 'logged in');
my ($login) = grep { $_->{path} eq '/token' } @{ requests() };
is($login->{headers}{'x-client-header'}, '[]', 'no client header');
is($login->{headers}{'x-client-arg'}, '[]', 'no client argument');
is($login->{headers}{'x-credential'}, '[billing]', 'the credential name');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 6: a graceful shutdown during a refresh: the refresh completes and is kept
--- http_config
    tokenrefresh_zone st:1m state=$TEST_NGINX_STATE_FILE key=$TEST_NGINX_KEY_FILE;
--- config
    location /api/ {
        tokenrefresh st billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 1000);
revoke();
my $h = fire(GET => '/api/b');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5), 'a refresh in flight');
drop($h);
stop_nginx('QUIT');
mock(delay_ms => 0);
start_nginx();
my $r = hit(GET => '/api/c');
is($r->{status}, 200, 'served after the restart');
like($r->{content}, qr/"token_n":3\b/, 'with the token the refresh got');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
--- timeout: 30



=== TEST 7: an HTTP/2 client goes away while its refresh is at a rotating provider: no refresh token is sent twice
Closing an HTTP/2 connection ends every stream on it, whatever they wait
for; the refresh must not be among them.
--- config
    listen 127.0.0.1:$TEST_NGINX_H2_PORT http2;

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 1500);
revoke();
my $url = "http://127.0.0.1:$ENV{TEST_NGINX_H2_PORT}";
my $pid = fork // die;
if ($pid == 0) {
    exec 'curl', '-s', '-o', '/dev/null', '--http2-prior-knowledge',
         '--max-time', '5', "$url/api/b";
}
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5),
   'the refresh is at the provider');
kill 'TERM', $pid;
waitpid $pid, 0;
my $r = hit(GET => '/api/c');
is($r->{status}, 200, 'the next request is served');
like($r->{content}, qr/"token_n":3\b/, 'with the token of that refresh');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
abandoned
--- timeout: 20
