# The state file: rotated refresh tokens survive restarts and are never
# sent twice; seeds; what happens to a state file that is damaged, sealed
# with another key, or readable by others; and what "nginx -t" refuses.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

# the keys, seeds and state files of this test, made before nginx starts
my $dir = File::Temp::tempdir('tokenrefresh-state-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_STATE_DIR} = $dir;

sub put {
    my ($name, $content, $mode) = @_;
    my $f = "$dir/$name";
    unlink $f;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $content;
    close $fh;
    chmod $mode // 0600, $f;
    return $f;
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<:raw', $f or return undef;
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s;
}

sub random_key { join '', map { sprintf '%02x', int rand 256 } 1 .. 32 }

put('key', random_key() . "\n");
put('key-open', random_key() . "\n", 0644);
put('key-short', "00112233\n");
put('key5', random_key() . "\n");
put('seed-billing', "seed-billing-1\n");
put('seed-t4', "seed-billing-1\n");
put('seed-open', "seed-open-1\n", 0640);
put('seed-bad', "seed with\tcontrol bytes\n");

sub mode_of { return (stat $_[0])[2] & 07777 }

no warnings 'once';
*Test::Nginx::Util::put = \&put;
*Test::Nginx::Util::slurp = \&slurp;
*Test::Nginx::Util::random_key = \&random_key;
*Test::Nginx::Util::mode_of = \&mode_of;
*Test::Nginx::Util::state_dir = sub { $dir };

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

    location = /status {
        tokenrefresh_status write=on;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: the tokens survive a restart; the file is sealed and 0600
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t1.state
                             key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $state = state_dir() . '/t1.state';
ok(!-e $state, 'no state file yet');
mock(rotate => 1);
like(hit(GET => '/api/a')->{content}, qr/"token_n":1\b/, 'logged in');
# the journal writes it off the event loop; the first change makes a snapshot
ok(wait_until(sub { -e $state }), 'the login wrote the state file');
is(sprintf('%o', mode_of($state)), '600', 'mode 0600');
ok(wait_until(sub { !-e "$state.journal.old" }),
   'the journal was merged into it');
my $s = stats();
my $bytes = slurp($state);
is(scalar(grep { index($bytes, $_) >= 0 }
           @{ $s->{issued} }, @{ $s->{refresh_issued} }), 0,
   'no token in the file in plain text');
is(substr($bytes, 0, 4), 'TRS1', 'the file starts with its magic');
restart_nginx('QUIT');
like(hit(GET => '/api/b')->{content}, qr/"token_n":1\b/,
     'the same token after a restart');
restart_nginx('KILL');
like(hit(GET => '/api/c')->{content}, qr/"token_n":1\b/,
     'and after nginx was killed');
revoke();
--- request eval
["GET /api/d", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/,
 "^calls=2 client_credentials=1 refresh_token=1\n\$"]
--- error_log eval
qr/tokenrefresh: 1 credentials of zone "rot" restored from ".*t1\.state"/
--- no_error_log
[error]



=== TEST 2: 50 rotations, restarts every 5, concurrent traffic: no reuse, no failure
The credential has no login: it lives on a seed and its successors, so a
refresh token sent twice (the provider then revokes the grant) or lost
fails requests.  Each cycle forces a refresh while 40 clients, in two
workers, use the credential: by revoking the access token (the upstream
answers 401, the requests are replayed) or by the status page's control.
Every fifth cycle nginx is stopped, gracefully or killed, and started.
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t2.state
                             key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rot billing $TEST_NGINX_STATE_DIR/seed-billing;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
control('grant', { cred => 'billing', refresh_token => 'seed-billing-1' });
my ($failed, $served, $restarts) = (0, 0, 0);
my @reqs = map { { method => 'GET', uri => "/api/r$_" } } 1 .. 40;
for my $cycle (1 .. 50) {
    if ($cycle % 2) {
        revoke();
    } else {
        my $r = hit(POST => '/status?zone=rot&credential=billing&action=refresh');
        $failed++ unless $r->{status} == 200;
    }
    for (storm(requests => \@reqs, timeout => 20)) {
        if ($_->{status} == 200) { $served++ } else { $failed++ }
    }
    if ($cycle % 5 == 0) {
        restart_nginx($cycle % 10 ? 'QUIT' : 'KILL');
        $restarts++;
    }
}
my $s = stats();
is($failed, 0, 'no failed request');
is($served, 50 * 40, 'every request served');
is($s->{reuse}, 0, 'no refresh token was sent twice');
is($s->{revoked_grants}, 0, 'the grant is alive');
is($s->{by_grant}{refresh_token}, 50, 'one refresh per cycle');
is($s->{by_grant}{client_credentials} // 0, 0, 'no login');
is($restarts, 10, 'ten restarts');
--- request
GET /api/last
--- response_body_like: "token_n":\d+
--- no_error_log
[error]
--- timeout: 240



=== TEST 3: a seed is used once; after a rotation and a restart its successor is used
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t3.state
                             key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rot billing $TEST_NGINX_STATE_DIR/seed-billing;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
control('grant', { cred => 'billing', refresh_token => 'seed-billing-1' });
is(hit(GET => '/api/a')->{status}, 200, 'the seed was refreshed');
my $log0 = error_log_size();
restart_nginx('QUIT');
reload_nginx();
is(scalar(grep { /seeded from/ } error_log_since($log0)), 0,
   'the seed was not applied again, by a restart or a reload');
revoke();
is(hit(GET => '/api/b')->{status}, 200, 'refreshed with the successor');
--- request
GET /calls
--- response_body
calls=2 refresh_token=2
--- error_log eval
qr/credential "billing" seeded from ".*seed-billing"/
--- no_error_log
[error]



=== TEST 4: a new seed (a new login) replaces a refresh token the provider revoked
The grant is revoked at the provider; the refresh fails and the credential
has no login.  The operator logs in again, writes the new seed, reloads.
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t4.state
                             key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rot billing $TEST_NGINX_STATE_DIR/seed-t4;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_backoff 100ms 100ms;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
control('grant', { cred => 'billing', refresh_token => 'seed-billing-1' });
is(hit(GET => '/api/a')->{status}, 200, 'the first seed works');
# the provider revokes the grant: the next refresh is refused
revoke(grants => 1);
my $r = hit(GET => '/api/c');
isnt($r->{status}, 200, 'refused: no refresh token, no login');
control('grant', { cred => 'billing', refresh_token => 'seed-billing-2' });
put('seed-t4', "seed-billing-2\n");
reload_nginx();
--- request
GET /api/d
--- response_body_like: "token_n":\d+
--- error_log eval
[qr/credential "billing" seeded from ".*seed-t4"/,
 qr/refresh of credential "billing" refused/]
--- no_error_log
[crit]



=== TEST 5: tampered, truncated, wrong-key and foreign state files: an empty zone, the file kept aside
Each is tried in turn against a good state file: nginx starts, says why,
logs in again, and keeps the rejected file as "<state>.rejected".
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t5.state
                             key=$TEST_NGINX_STATE_DIR/key5;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $state = state_dir() . '/t5.state';
my $key = random_key();
my %damage = (
    tampered  => sub { my $b = shift; substr($b, 20, 1) ^= "\x01"; $b },
    truncated => sub { substr(shift, 0, -7) },
    empty     => sub { '' },
    foreign   => sub { "{\"access_token\":\"x\"}\n" },
    wrong_key => sub { put('key5', random_key() . "\n"); shift },
);
my $logins = 1;
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
for my $kind (sort keys %damage) {
    wait_until(sub { -e $state });
    my $good = slurp($state);
    ok(defined $good && length $good > 32, "$kind: a good state file");
    my $log0 = error_log_size();
    stop_nginx('QUIT');
    my $bad = $damage{$kind}->($good);
    put('t5.state', $bad);
    unlink "$state.rejected";
    start_nginx();
    my @log = error_log_since($log0);
    my $why = $kind eq 'foreign' ? qr/is not a state file/
            : $kind eq 'empty' ? qr/is not a state file/
            : qr/is corrupt, truncated, sealed with another key/;
    ok(scalar(grep { /\[error\].*state file ".*t5\.state" of zone "rot" $why/ }
              @log), "$kind: rejected with a clear error");
    ok(scalar(grep { /kept as ".*t5\.state\.rejected"/ } @log),
       "$kind: kept aside");
    is(slurp("$state.rejected"), $bad, "$kind: unchanged");
    is(hit(GET => '/api/x')->{status}, 200, "$kind: served after a login");
    $logins++;
    like(calls(), qr/client_credentials=$logins\b/, "$kind: one new login");
}
# a reload that keeps the zone does not read the file
my $log0 = error_log_size();
put('t5.state', 'garbage');
reload_nginx();
is(hit(GET => '/api/y')->{status}, 200, 'served after a reload');
like(calls(), qr/client_credentials=$logins\b/, 'with the zone\'s token');
is(scalar(grep { /state file/ } error_log_since($log0)), 0,
   'the file was not read');
--- request
GET /api/z
--- response_body_like: "token_n":\d+
--- no_error_log
[crit]
[emerg]
--- timeout: 60



=== TEST 6: a state file others may read is used, and its mode made 0600
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t6.state
                             key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $state = state_dir() . '/t6.state';
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
ok(wait_until(sub { -e $state }), 'the state file was written');
chmod 0644, $state;
restart_nginx('QUIT');
is(sprintf('%o', mode_of($state)), '600', 'mode 0600 again');
--- request eval
["GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":1\b/, "^calls=1 client_credentials=1\n\$"]
--- error_log eval
qr/\[warn\] .*state file ".*t6\.state" could be read by group or others, its mode is now 0600/
--- no_error_log
[error]



=== TEST 7: a refresh whose worker died in flight: the same refresh token is refused, then a login
The provider has spent the refresh token when the worker that sent it is
killed; the module cannot know, sends it again after the lease expires,
the provider refuses it (and revokes the grant), the module logs in.
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t7.state
                             key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_refresh_timeout 1s;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
mock(delay_ms => 1500);
revoke();
my $log0 = error_log_size();
my $h = fire(GET => '/api/b');
ok(wait_until(sub { calls() =~ /refresh_token=1/ }, 5), 'a refresh in flight');
my ($leader) = pids_in(qr/refresh of credential "billing" started/,
                       error_log_since($log0));
ok($leader, "sent by worker $leader");
kill 'KILL', $leader;
collect($h, 5);
mock(delay_ms => 0);
--- request eval
["GET /api/c", "GET /calls"]
--- response_body_like eval
[qr/"token_n":\d+/,
 "^calls=4 client_credentials=2 refresh_token=2 reuse=1\n\$"]
--- error_log eval
[qr/the lease of worker \d+ on credential "billing" (?:expired|is gone), taking over/,
 qr/refresh of credential "billing" refused/]
--- no_error_log
[crit]
--- timeout: 20



=== TEST 8: a reload that changes the zone's size takes the old zone's state, not the file's
The new zone starts as a copy of the zone it replaces: the token and the
rotated refresh token are kept, no login.
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t8.state
                             key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh rot billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
revoke();
is(hit(GET => '/api/b')->{status}, 200, 'refreshed: a rotated refresh token');
my $conf = $Test::Nginx::Util::ConfFile;
my $text = slurp($conf);
$text =~ s/tokenrefresh_zone rot:1m/tokenrefresh_zone rot:2m/ or die;
open my $out, '>', $conf or die "$conf: $!";
print $out $text;
close $out;
my $log0 = error_log_size();
reload_nginx();
ok(scalar(grep { /zone "rot" resized from 1048576 to 2097152 bytes, 1 credentials taken from the zone it replaces/ }
          error_log_since($log0)), 'the new zone took the old one\'s credentials');
ok(!scalar(grep { /restored from/ } error_log_since($log0)),
   'and did not read the file');
like(hit(GET => '/api/c')->{content}, qr/"token_n":3\b/,
     'the same token after the reload');
revoke();
--- request eval
["GET /api/d", "GET /calls"]
--- response_body_like eval
[qr/"token_n":5\b/,
 "^calls=3 client_credentials=1 refresh_token=2\n\$"]
--- no_error_log
[error]



=== TEST 9: a key file others may read is refused
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t8.state
                             key=$TEST_NGINX_STATE_DIR/key-open;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"\S+key-open" holds a secret and may be read by group or others: make it readable by its owner only \(chmod 600\) in .*nginx\.conf:\d+/



=== TEST 10: a key of the wrong length
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t9.state
                             key=$TEST_NGINX_STATE_DIR/key-short;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*the key "\S+key-short" must be 32 bytes in 64 hex digits, as "openssl rand -hex 32" writes in .*nginx\.conf:\d+/



=== TEST 11: a state file without a key
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t10.state;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"state=" and "key=" go together: the state file holds secrets and is always encrypted in .*nginx\.conf:\d+/



=== TEST 12: a key file that does not exist
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t11.state
                             key=$TEST_NGINX_STATE_DIR/nosuchkey;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*cannot open "\S+nosuchkey" \(2: No such file or directory\) in .*nginx\.conf:\d+/



=== TEST 13: a seed others may read
--- http_config
    tokenrefresh_zone rot:1m;
    tokenrefresh_seed rot billing $TEST_NGINX_STATE_DIR/seed-open;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"\S+seed-open" holds a secret and may be read by group or others/



=== TEST 14: a seed that is not a token
--- http_config
    tokenrefresh_zone rot:1m;
    tokenrefresh_seed rot billing $TEST_NGINX_STATE_DIR/seed-bad;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"\S+seed-bad" does not hold a refresh token: .* in .*nginx\.conf:\d+/



=== TEST 15: a seed for a zone declared later
--- http_config
    tokenrefresh_seed rot billing $TEST_NGINX_STATE_DIR/seed-billing;
    tokenrefresh_zone rot:1m;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*zone "rot" must be declared with "tokenrefresh_zone" before its seeds in .*nginx\.conf:\d+/



=== TEST 16: two zones with one state file
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t15.state
                             key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_zone rot2:1m state=$TEST_NGINX_STATE_DIR/t15.state
                              key=$TEST_NGINX_STATE_DIR/key;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*zone "rot" already uses the state file "\S+t15\.state" in .*nginx\.conf:\d+/
