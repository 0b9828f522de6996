# What a trial with configurations nobody wrote for it found: state files
# rejected twice, many refreshes in flight at a resize, a loop guard worn
# down by mixed traffic, cache updates, tokens that expire on the way,
# path aliases, values that nginx -t let through, token locations that
# anyone may call, tokens that never reach the upstream, and a worker
# killed during a refresh.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

my $dir = File::Temp::tempdir('tokenrefresh-trial-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_STATE_DIR} = $dir;
mkdir "$dir/cache";

sub put {
    my ($name, $content) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $content;
    close $fh;
    chmod 0600, "$dir/$name";
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<:raw', $f or return undef;
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s;
}

sub edit_conf {
    my ($from, $to) = @_;
    my $conf = $Test::Nginx::Util::ConfFile;
    my $text = slurp($conf);
    $text =~ s/$from/$to/ or die "\"$from\" not in $conf";
    open my $out, '>', $conf or die "$conf: $!";
    print $out $text;
    close $out;
}

put('key', join('', map { sprintf '%02x', int rand 256 } 1 .. 32) . "\n");
put('key2', join('', map { sprintf '%02x', int rand 256 } 1 .. 32) . "\n");
mkdir "$dir/alias";
symlink "$dir", "$dir/alias/link" or die "symlink: $!";

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(put slurp edit_conf);
    *Test::Nginx::Util::state_dir = sub { $dir };
}

add_block_preprocessor(sub {
    my $block = shift;

    return if $block->must_die;

    $block->set_value('config', <<'_EOC_' . ($block->config // ''));
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

=== TEST 1: a second rejected state file does not overwrite the first one kept aside
--- http_config
    tokenrefresh_zone rj:1m state=$TEST_NGINX_STATE_DIR/t1.state
                            key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rj billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $state = state_dir() . '/t1.state';
is(hit(GET => '/api/a')->{status}, 200, 'logged in: the state file holds a token');
# written by a thread: the answer may come first
ok(wait_until(sub { -s $state }), 'the good file');
my $good = slurp($state);
# a mistake: the wrong key; the good file goes aside, a new one is saved
stop_nginx('QUIT');
edit_conf(qr{key=\S+/key;}, "key=$ENV{TEST_NGINX_STATE_DIR}/key2;");
start_nginx();
is(slurp("$state.rejected"), $good, 'the good file was kept aside');
is(hit(GET => '/api/b')->{status}, 200, 'a login, saved under the wrong key');
# the mistake fixed: the file saved under the wrong key goes aside too
stop_nginx('QUIT');
edit_conf(qr{key=\S+/key2;}, "key=$ENV{TEST_NGINX_STATE_DIR}/key;");
start_nginx();
my @aside = grep { slurp($_) eq $good } glob "$state.rejected*";
is(scalar @aside, 1, 'the good file is still kept, under its own name');
my @all = glob "$state.rejected*";
is(scalar @all, 2, 'and the second one next to it');
--- request
GET /calls
--- response_body
calls=2 client_credentials=2



=== TEST 2: a resize with more refreshes in flight than the handover holds at once: no outcome is lost
Eighty credentials with 15 KB tokens refresh at a rotating provider while
a reload resizes the zone.
--- http_config
    tokenrefresh_zone big:8m max_token_size=16k
                      state=$TEST_NGINX_STATE_DIR/t2.state
                      key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh big $arg_t;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(token_pad => 15000, rotate => 1);
my @st = map { hit(GET => "/api/x?t=h$_")->{status} } 1 .. 80;
is(scalar(grep { $_ == 200 } @st), 80, '80 credentials logged in');
revoke();
mock(delay_ms => 3000);
my @h = map { fire(GET => "/api/y?t=h$_") } 1 .. 80;
ok(wait_until(sub { calls() =~ /refresh_token=80\b/ }, 10),
   '80 refreshes in flight');
edit_conf(qr/tokenrefresh_zone big:8m/, 'tokenrefresh_zone big:9m');
reload_nginx();
is(scalar(grep { collect($_, 20)->{status} == 200 } @h), 80,
   'every request that waited is served');
mock(delay_ms => 0);
revoke();
@st = map { hit(GET => "/api/z?t=h$_")->{status} } 1 .. 80;
is(scalar(grep { $_ == 200 } @st), 80,
   'the new workers refresh every credential with its rotated token');
my $s = stats();
is($s->{reuse} // 0, 0, 'no refresh token was sent twice');
is($s->{revoked_grants}, 0, 'no grant revoked');
--- request
GET /calls
--- response_body
calls=240 client_credentials=80 refresh_token=160
--- timeout: 90



=== TEST 3: the loop guard holds under mixed traffic: an endpoint that always answers 401 does not storm the provider
One endpoint rejects every token (a permission problem), another takes
it: a success elsewhere does not make the next 401 worth a refresh.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_backoff 1s 8s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/ok')->{status}, 200, 'logged in');
my $t0 = time;
my ($n401, $n200) = (0, 0);
while (time - $t0 < scaled(5)) {
    $n401++ if hit(GET => '/api/status/401')->{status} == 401;
    $n200++ if hit(GET => '/api/ok')->{status} == 200;
}
ok($n401 > 20, "$n401 answers 401");
my $calls = stats()->{calls} - 1;
cmp_ok($calls, '<=', 5, "$calls token calls in 5 s of mixed traffic");
--- request
GET /calls
--- response_body_like
^calls=\d+ client_credentials=1 refresh_token=\d+
--- timeout: 30



=== TEST 4: proxy_cache_background_update: the update carries the token, and the cache is renewed
--- http_config
    proxy_cache_path $TEST_NGINX_STATE_DIR/cache keys_zone=c:1m;
--- config
    location /cached/ {
        tokenrefresh tokens svc;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_cache c;
        proxy_cache_valid 200 1s;
        proxy_cache_use_stale updating error timeout;
        proxy_cache_background_update on;
        add_header X-Cache $upstream_cache_status;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/cached/y')->{headers}{'x-cache'}, 'MISS', 'a miss');
# the entry is in the cache once the upstream's answer is written there,
# which may come after the client has its copy: the next request may miss
ok(wait_until(sub { hit(GET => '/cached/y')->{headers}{'x-cache'} eq 'HIT' }, 3),
   'a hit');
# nginx counts a cache entry's validity in whole seconds
my $t0 = time;
wait_until(sub { time - $t0 > scaled(2.2) }, 5);
is(hit(GET => '/cached/y')->{headers}{'x-cache'}, 'STALE', 'stale: an update starts');
ok(wait_until(sub { hit(GET => '/cached/y')->{headers}{'x-cache'} eq 'HIT' }, 5),
   'the update renewed the entry');
my @api = grep { $_->{port} eq 'api' } @{ requests() };
is(scalar(grep { !defined $_->{headers}{authorization} } @api), 0,
   'every request to the API carried a token');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 5: a token that expires before it arrives: a failure with back-off, not a loop
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_backoff 1s 1s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 1, delay_ms => 1100);
my $r = hit(GET => '/api/a');
is($r->{status}, 502, 'the failure status');
ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- error_log
expired before it arrived



=== TEST 6: a lifetime shorter than a second is refused by nginx -t
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_default_lifetime 300ms;
        proxy_pass http://api;
    }
--- must_die
--- error_log eval
qr/"tokenrefresh_default_lifetime" must be at least 1s in .*nginx\.conf:\d+/



=== TEST 7: two zones with one state file through a path alias: nginx -t refuses it
--- http_config
    tokenrefresh_zone a1:1m state=$TEST_NGINX_STATE_DIR/t7.state
                            key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_zone a2:1m state=$TEST_NGINX_STATE_DIR/alias/link/t7.state
                            key=$TEST_NGINX_STATE_DIR/key;
--- config
--- must_die
--- error_log eval
qr/zone "a1" already uses the state file/



=== TEST 8: tokenrefresh_refresh_timeout 0 is refused
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 0;
    }
--- must_die
--- error_log eval
qr/"tokenrefresh_refresh_timeout" must be more than 0/



=== TEST 9: tokenrefresh_wait_timeout 0 is refused
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_wait_timeout 0;
    }
--- must_die
--- error_log eval
qr/"tokenrefresh_wait_timeout" must be more than 0/



=== TEST 10: tokenrefresh_max_response_size 0 is refused
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_max_response_size 0;
    }
--- must_die
--- error_log eval
qr/"tokenrefresh_max_response_size" must be more than 0/



=== TEST 11: tokenrefresh_failure_status 499 is refused (nginx's own, the client never sees it)
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_failure_status 499;
    }
--- must_die
--- error_log eval
qr/invalid status "499"/



=== TEST 12: a status listed twice in tokenrefresh_rejected_status is refused
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_rejected_status 401 401;
    }
--- must_die
--- error_log eval
qr/duplicate status "401"/



=== TEST 13: a token location that is not internal: the log warns that clients can call it
--- config
    location = /_open_login {
        proxy_set_body "grant_type=client_credentials&client_id=x";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_open_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request
GET /api/a
--- error_code: 200
--- error_log
the token location "/_open_login" is not internal



=== TEST 14: a location whose own proxy_set_header drops the token: the log says so
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }
--- request
GET /api/a
--- error_code: 401
--- error_log
no token variable in the request to the upstream



=== TEST 15: a client that goes away while it waits: $tokenrefresh_outcome says so
--- http_config
    log_format tr '$request_uri $status [$tokenrefresh_outcome] [$tokenrefresh_wait_time]';
--- config
    access_log logs/tr.log tr;

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 1500);
my $h = fire(GET => '/api/gone');
ok(wait_until(sub { calls() =~ /client_credentials=1/ }, 5), 'waiting');
drop($h);
my $log = "$Test::Nginx::Util::ServRoot/logs/tr.log";
my $line;
ok(wait_until(sub { ($line) = grep { m{^/api/gone } } split /\n/, slurp($log) // ''; $line }, 5),
   'logged');
like($line, qr{^/api/gone 499 \[gone\] \[\d+\.\d{3}\]$}, 'gone, and how long it waited');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 16: a reload that shrinks a full zone keeps what fits, the credentials that cannot log in again first
--- http_config
    tokenrefresh_zone sh:1m max_token_size=1k;
--- config
    location /api/ {
        tokenrefresh sh $arg_c;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my @st = map { hit(GET => "/api/x?c=c$_")->{status} } 1 .. 200;
is(scalar(grep { $_ == 200 } @st), 200, '200 credentials');
edit_conf(qr/tokenrefresh_zone sh:1m/, 'tokenrefresh_zone sh:64k');
my $log0 = error_log_size();
reload_nginx();
my @log = error_log_since($log0);
ok(scalar(grep { /resized from 1048576 to 65536 bytes/ } @log), 'the reload went through')
    or diag(grep { /tokenrefresh/ } @log);
ok(scalar(grep { /credentials that can log in again were left out/ } @log),
   'the log says some were left out');
--- request
GET /api/x?c=c200
--- response_body_like: "token_n":\d+
--- timeout: 30



=== TEST 17: nginx -t does not read the state file
--- http_config
    tokenrefresh_zone tst:1m state=$TEST_NGINX_STATE_DIR/t17.state
                             key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh tst billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'a state file is written');
my $out = `$Test::Nginx::Util::NginxBinary -p $Test::Nginx::Util::ServRoot/ -c $Test::Nginx::Util::ConfFile -t 2>&1`;
like($out, qr/test is successful/, 'nginx -t passes');
unlike($out, qr/restored/, 'and reads no state file');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 18: a worker killed during a refresh: the others take over at once, before the waiting requests time out
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 3000);
revoke();
my $log0 = error_log_size();
my $h = fire(GET => '/api/b');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5), 'a refresh in flight');
my ($leader) = pids_in(qr/refresh of credential "billing" started/,
                       error_log_since($log0));
ok($leader, "in worker $leader");
kill 'KILL', $leader;
mock(delay_ms => 0);
my @h = map { fire(GET => "/api/c$_") } 1 .. 10;
is(scalar(grep { collect($_)->{status} == 200 } @h), 10,
   'the requests after the kill are served');
--- request
GET /calls
--- response_body_like
^calls=\d+ client_credentials=\d+ refresh_token=\d+
--- no_error_log
[crit]
--- timeout: 30
