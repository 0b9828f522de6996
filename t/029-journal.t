# The journal (issue 13): a change to a zone is one sealed frame appended
# to "<state>.journal" off the event loop, not a copy of the zone; a
# restart after kill -9 finds the snapshot and the journal; a torn last
# frame is dropped, a corrupt one rejects the state; ended sessions stay
# ended; the journal is compacted into the snapshot.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use JSON::PP;
use File::Temp ();

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

my $json = JSON::PP->new->canonical;

my $dir = File::Temp::tempdir('tokenrefresh-journal-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_STATE_DIR} = $dir;
{
    open my $fh, '>', "$dir/key" or die "$dir/key: $!";
    print $fh join('', map { sprintf '%02x', int rand 256 } 1 .. 32), "\n";
    close $fh;
    chmod 0600, "$dir/key";
}

# a new size for a zone, in the configuration of the running nginx
sub resize {
    my ($from, $to) = @_;
    my $conf = $Test::Nginx::Util::ConfFile;
    open my $in, '<', $conf or die "$conf: $!";
    local $/;
    my $text = <$in>;
    close $in;
    $text =~ s/\Q$from\E/$to/ or die "\"$from\" not in $conf";
    open my $out, '>', $conf or die "$conf: $!";
    print $out $text;
    close $out;
}

# a user logs in through nginx: (status, decoded body, headers)
sub login {
    my ($email, %o) = @_;
    my $r = hit(POST => $o{uri} // '/login',
                headers => { 'Content-Type' => 'application/json',
                             %{ $o{headers} // {} } },
                body => $json->encode({ email => $email,
                                        password => $o{password}
                                                    // "secret-$email" }));
    my $body = eval { $json->decode($r->{content}) };
    return ($r->{status}, $body, $r->{headers}, $r->{content});
}

sub as_user {
    my ($method, $uri, $handle, %o) = @_;
    return hit($method => $uri,
               headers => { 'X-Session' => $handle, %{ $o{headers} // {} } },
               %o{grep { $_ ne 'headers' } keys %o});
}

sub jdecode { return eval { $json->decode($_[0]) } // {}; }

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(login as_user jdecode resize);
}


sub state_of { return "$dir/j$_[0].state"; }
sub size_of { return -s $_[0] // 0; }
sub inode_of { return (stat $_[0])[1] // 0; }

# the mock's refresh calls so far
sub refreshes { return stats()->{by_path}{'/api/tokens/refresh'} // 0; }

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(state_of size_of inode_of refreshes);
}

add_block_preprocessor(sub {
    my $block = shift;

    return if $block->must_die;

    # a crash or a request counted wrong fails any test of this file
    $block->set_value('no_error_log', "[alert]\n[crit]\n"
                                      . ($block->no_error_log // ''));

    # a state file of its own for each test
    my $n = $block->name =~ /TEST (\d+)/ ? $1 : 0;
    (my $zone = <<'_EOC_') =~ s/\bFILE\b/j$n/;
    tokenrefresh_zone users:4m session_idle=1h session_lifetime=1d
                      state=$TEST_NGINX_STATE_DIR/FILE.state
                      key=$TEST_NGINX_STATE_DIR/key;
_EOC_
    $block->set_value('http_config', $zone . ($block->http_config // ''))
        unless ($block->http_config // '') =~ /tokenrefresh_zone users/;

    $block->set_value('config', <<'_EOC_' . ($block->config // ''));
    tokenrefresh_session_header X-Session;
    tokenrefresh_json_access_token /token;
    tokenrefresh_json_refresh_token /refreshToken;

    location = /login {
        tokenrefresh_session_login users;
        tokenrefresh_json_expires_in /expiresIn;
        tokenrefresh_session_handle_json session;
        tokenrefresh_session_keep locale $http_accept_language;
        proxy_set_header Accept-Encoding "";
        proxy_pass http://idp/api/tokens;
    }

    location = /_srefresh {
        internal;
        proxy_set_header Content-Type application/json;
        proxy_set_header Accept-Language $tokenrefresh_kept_locale;
        proxy_set_body '{"refreshToken":"$tokenrefresh_refresh_token_json"}';
        proxy_pass http://idp/api/tokens/refresh;
    }

    location = /logout {
        tokenrefresh_session_logout users revoke=/_revoke;
    }

    location = /_revoke {
        internal;
        proxy_set_body "token=$tokenrefresh_refresh_token_form&token_type_hint=refresh_token";
        proxy_pass http://idp/revoke;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a refresh appends one frame to the journal: the snapshot is not rewritten, and the frame does not grow with the zone
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my $state = state_of(1);
my @users = map { "u$_\@example.com" } 1 .. 200;
my %handle;
for my $u (@users) {
    my ($st, $b) = login($u);
    $handle{$u} = $b->{session};
}
is(scalar(grep { defined } values %handle), 200, '200 users logged in');
ok(wait_until(sub { -e $state && !-e "$state.journal.old" }),
   'a snapshot, no compaction under way');
my ($inode, $snap, $j0) = (inode_of($state), size_of($state),
                           size_of("$state.journal"));
cmp_ok($snap + $j0, '>', 30_000, 'the state of 200 sessions is large');
# ten users' tokens are revoked: ten refreshes, each answer after its frame
my @ten = @users[0 .. 9];
revoke(cred => $_) for @ten;
my $ok = 0;
for my $u (@ten) {
    $ok++ if as_user(GET => '/api/x', $handle{$u})->{status} == 200;
}
is($ok, 10, 'ten requests served after their refreshes');
is(refreshes(), 10, 'ten refreshes');
my $grown = size_of("$state.journal") - $j0;
cmp_ok($grown, '>', 0, 'the journal grew');
cmp_ok($grown, '<', 10 * 600, 'by one small frame per refresh')
    or diag("grew by $grown bytes");
is(inode_of($state), $inode, 'the snapshot was not rewritten');
is(size_of($state), $snap, 'nor changed');
is(sprintf('%o', (stat "$state.journal")[2] & 07777), '600', 'the journal is 0600');
my $s = stats();
my $bytes = do { local $/; open my $fh, '<:raw', "$state.journal" or die; <$fh> };
is(scalar(grep { index($bytes, $_) >= 0 }
           @{ $s->{issued} }, @{ $s->{refresh_issued} }), 0,
   'no token in the journal in plain text');
--- request
GET /calls
--- response_body_like
^calls=210 login=200 refresh=10$
--- no_error_log
[error]



=== TEST 2: kill -9 of nginx after rotations: the snapshot and the journal give back every session and every rotated refresh token
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my $state = state_of(2);
my %handle;
for my $i (1 .. 20) {
    my (undef, $b) = login("k$i\@example.com");
    $handle{"k$i\@example.com"} = $b->{session};
}
for my $round (1 .. 3) {
    revoke();
    my $ok = 0;
    for my $u (sort keys %handle) {
        $ok++ if as_user(GET => "/api/r$round", $handle{$u})->{status} == 200;
    }
    is($ok, 20, "round $round: every user served");
    is(refreshes(), 20 * $round, "round $round: one refresh per user");
    ok(-s "$state.journal" || -s "$state.journal.old",
       "round $round: the rotations are in the journal");
    my $log0 = error_log_size();
    restart_nginx('KILL');
    my $log = join '', error_log_since($log0);
    like($log, qr/journal frames of zone "users" read/, "round $round: the journal read");
    like($log, qr/20 credentials of zone "users" restored .*\(20 of them users' sessions\)/,
         "round $round: every session restored");
}
ok(!-e "$state.journal", 'the start folded the journal into the snapshot');
my $s = stats();
is($s->{reuse}, 0, 'no refresh token was sent twice');
is($s->{revoked_grants}, 0, 'no grant was lost');
--- request
GET /calls
--- response_body_like
^calls=80 login=20 refresh=60$
--- error_log_level: notice
--- no_error_log
[error]
--- timeout: 120



=== TEST 3: a torn last frame (the machine stopped during an append) is dropped; the frames before it count
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my $state = state_of(3);
my (undef, $a) = login('tom@example.com');
my (undef, $b) = login('una@example.com');
revoke();
is(as_user(GET => '/api/a', $a->{session})->{status}, 200, 'refreshed');
ok(-s "$state.journal", 'frames in the journal');
stop_nginx('KILL');
# half a frame: its length, and less than it says
open my $fh, '>>:raw', "$state.journal" or die;
print $fh pack('V', 500), 'x' x 100;
close $fh;
my $log0 = error_log_size();
start_nginx();
my $log = join '', error_log_since($log0);
like($log, qr/\[warn\].*the last 104 bytes of ".*j3\.state\.journal" were a torn frame/,
     'the torn frame is named');
like($log, qr/2 credentials of zone "users" restored/, 'both sessions restored');
revoke();
is(as_user(GET => '/api/b', $a->{session})->{status}, 200, 'the rotated token works');
is(as_user(GET => '/api/c', $b->{session})->{status}, 200, 'and the other session');
is(stats()->{reuse}, 0, 'no refresh token was sent twice');
--- request
GET /calls
--- response_body_like
^calls=5 login=2 refresh=3$
--- error_log_level: notice



=== TEST 4: a frame damaged before the last one: the state is refused, kept aside, and says why
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $state = state_of(4);
my (undef, $a) = login('vic@example.com');
ok(wait_until(sub { -e $state }), 'a snapshot');
my (undef, $b) = login('wes@example.com');
my (undef, $c) = login('xia@example.com');
ok(wait_until(sub { (-s "$state.journal" // 0) > 200 }), 'two frames in the journal');
stop_nginx('QUIT');
my $j = do { local $/; open my $fh, '<:raw', "$state.journal" or die; <$fh> };
substr($j, 30, 1) ^= "\x01";
open my $fh, '>:raw', "$state.journal" or die;
print $fh $j;
close $fh;
my $log0 = error_log_size();
start_nginx();
my $log = join '', error_log_since($log0);
like($log, qr/\[error\].*zone "users" .* cannot be read: a frame of the journal is corrupt/,
     'refused with a clear error');
ok(-e "$state.journal.rejected", 'the journal kept aside');
ok(-e "$state.rejected", 'the snapshot kept aside with it');
is(as_user(GET => '/api/a', $a->{session})->{status}, 401, 'an empty zone');
my (undef, $d) = login('yan@example.com');
is(as_user(GET => '/api/b', $d->{session})->{status}, 200, 'a new login works');
--- request
GET /calls
--- response_body_like
^calls=5 login=4 api=1$|^calls=4 login=4$
--- error_log_level: notice



=== TEST 5: sessions ended by a logout, a refused refresh and an operator stay ended after kill -9
--- http_config
    tokenrefresh_zone users:4m session_idle=1h session_lifetime=1d
                      state=$TEST_NGINX_STATE_DIR/j5.state
                      key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
    location = /status {
        tokenrefresh_status write=on;
    }
    location = /logout-local {
        tokenrefresh_session_logout users;
    }
--- init
mock(rotate => 1, jwt => 1);
my %h;
for my $u (qw(out refused ended kept)) {
    my (undef, $b) = login("$u\@example.com");
    $h{$u} = $b->{session};
}
is(as_user(POST => '/logout-local', $h{out})->{status}, 204,
   'logged out, without revocation');
# the provider forgets one user's grant: the next refresh is refused
control('revoke', { grants => 1 });
my (undef, $k) = login('kept@example.com');
$h{kept} = $k->{session};
revoke(cred => 'refused@example.com');
is(as_user(GET => '/api/a', $h{refused})->{status}, 401, 'a refused refresh ends it');
is(hit(POST => '/status?zone=users&action=end&subject=ended%40example.com')->{status},
   200, 'an operator ends one');
restart_nginx('KILL');
is(as_user(GET => '/api/b', $h{out})->{status}, 401, 'logged out: still ended');
is(as_user(GET => '/api/c', $h{refused})->{status}, 401, 'refused: still ended');
is(as_user(GET => '/api/d', $h{ended})->{status}, 401, 'ended by the operator: still ended');
is(as_user(GET => '/api/e', $h{kept})->{status}, 200, 'the live one lives');
--- request
GET /api/f
--- more_headers eval
"X-Session: x"
--- error_code: 401
--- error_log_level: notice



=== TEST 6: two sessions whose digests share the tree key (restored from a state file) are both found
The zone orders its tree by 32 bits of the handle's digest, then by kind
and digest: a session must be known as one when it is inserted.  Two
handles whose digests collide on those 32 bits are found by a birthday
search, given real tokens by the mock, and written into a state file
sealed with the zone's key, the greater digest restored second.
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
use Digest::SHA qw(sha256);
use Crypt::AuthEnc::GCM qw(gcm_encrypt_authenticate);
my @b64 = ('A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '_');
my (%seen, @pair);
while (!@pair) {
    my $h = join '', map { $b64[rand 64] } 1 .. 43;
    my $k = substr(sha256($h), 0, 4);
    if (exists $seen{$k} && $seen{$k} ne $h) { @pair = ($seen{$k}, $h) }
    $seen{$k} = $h;
}
@pair = sort { substr(sha256($a), 0, 16) cmp substr(sha256($b), 0, 16) } @pair;
is(substr(sha256($pair[0]), 0, 4), substr(sha256($pair[1]), 0, 4),
   'two handles whose digests share 32 bits');
my $now = int(time * 1000);
my $plain = '';
for my $i (0, 1) {
    my $r = HTTP::Tiny->new->post(
        "http://127.0.0.1:$ENV{TEST_NGINX_IDP_PORT}/api/tokens",
        { headers => { 'Content-Type' => 'application/json' },
          content => JSON::PP->new->encode({ email => "c$i\@example.com",
                                     password => "secret-c$i\@example.com" }) });
    my $t = jdecode($r->{content});
    ok($t->{token} && $t->{refreshToken}, "tokens for user $i");
    # the smaller digest was used last: restored first
    $plain .= pack('Q<', 1) . "\x01"
            . pack('v', 16) . substr(sha256($pair[$i]), 0, 16)
            . pack('V', length $t->{token}) . $t->{token}
            . pack('V', length $t->{refreshToken}) . $t->{refreshToken}
            . pack('q<', $now) . pack('q<', $now + 3_600_000) . pack('Q<', 1)
            . ("\0" x 16)
            . "\x01" . pack('q<', $now) . pack('q<', $now - 1000 * $i)
            . ("\0" x 16) . pack('v', 0);
}
$plain = 'TRS3' . pack('Q<', 0) . pack('V', 2) . pack('V', 0) . $plain;
my $key = do { open my $fh, '<', "$ENV{TEST_NGINX_STATE_DIR}/key" or die; local $/; <$fh> };
$key =~ s/\s+//g;
my $nonce = join '', map { chr rand 256 } 1 .. 12;
my ($ct, $tag) = gcm_encrypt_authenticate('AES', pack('H*', $key), $nonce,
                                          'TRS1users', $plain);
stop_nginx('QUIT');
my $state = state_of(6);
unlink $state, "$state.journal";
open my $fh, '>:raw', $state or die;
print $fh 'TRS1', $nonce, $ct, $tag;
close $fh;
chmod 0600, $state;
my $log0 = error_log_size();
start_nginx();
like(join('', error_log_since($log0)),
     qr/2 credentials of zone "users" restored .*\(2 of them users' sessions\)/,
     'both restored');
is(as_user(GET => '/api/a', $pair[0])->{status}, 200, 'the first is found');
is(as_user(GET => '/api/b', $pair[1])->{status}, 200, 'the second is found');
is(jdecode(as_user(GET => '/api/c', $pair[1])->{content})->{cred},
   'c1@example.com', "with its own user's token");
--- request
GET /calls
--- response_body_like
^calls=2 login=2$
--- error_log_level: notice



=== TEST 7: the state files of 0.8 ("TRS1" inside) and 0.9 ("TRS2", with sessions) are still read
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
    location /named/ {
        tokenrefresh users billing;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
    location = /status {
        tokenrefresh_status;
    }
--- init
use Digest::SHA qw(sha256 sha256_hex);
use Crypt::AuthEnc::GCM qw(gcm_encrypt_authenticate);
my $key = do { open my $fh, '<', "$ENV{TEST_NGINX_STATE_DIR}/key" or die; local $/; <$fh> };
$key =~ s/\s+//g;
my $state = state_of(7);
my $now = int(time * 1000);
sub seal_state {
    my ($plain) = @_;
    my $nonce = join '', map { chr rand 256 } 1 .. 12;
    my ($ct, $tag) = gcm_encrypt_authenticate('AES', pack('H*', $key), $nonce,
                                              'TRS1users', $plain);
    stop_nginx('QUIT');
    unlink $state, "$state.journal";
    open my $fh, '>:raw', $state or die;
    print $fh 'TRS1', $nonce, $ct, $tag;
    close $fh;
    chmod 0600, $state;
    my $log0 = error_log_size();
    start_nginx();
    return join '', error_log_since($log0);
}
sub record {
    my ($name, $at, $rt) = @_;
    return pack('v', length $name) . $name
         . pack('V', length $at) . $at . pack('V', length $rt) . $rt
         . pack('q<', $now) . pack('q<', $now + 3_600_000) . pack('Q<', 1)
         . ("\0" x 16);
}
# 0.8: no session byte
my $log = seal_state('TRS1' . pack('V', 1) . pack('V', 0)
                     . record('billing', 'at-from-0.8', 'rt-from-0.8'));
like($log, qr/1 credentials of zone "users" restored/, '0.8: restored');
my $st = jdecode(hit(GET => '/status')->{content});
is($st->{zones}{users}{credentials}{billing}{token}{fingerprint},
   substr(sha256_hex('at-from-0.8'), 0, 12), "0.8: the credential's token");
# 0.9: a session byte, a user's session
my $handle = join '', map { ('A' .. 'Z', 'a' .. 'z')[rand 52] } 1 .. 43;
my $r = HTTP::Tiny->new->post(
    "http://127.0.0.1:$ENV{TEST_NGINX_IDP_PORT}/api/tokens",
    { headers => { 'Content-Type' => 'application/json' },
      content => JSON::PP->new->encode({ email => 'old@example.com',
                                         password => 'secret-old@example.com' }) });
my $t = jdecode($r->{content});
$log = seal_state('TRS2' . pack('V', 1) . pack('V', 0)
                  . record(substr(sha256($handle), 0, 16), $t->{token},
                           $t->{refreshToken})
                  . "\x01" . pack('q<', $now) . pack('q<', $now)
                  . ("\0" x 16) . pack('v', 0));
like($log, qr/1 credentials of zone "users" restored .*\(1 of them users' sessions\)/,
     '0.9: restored');
is(jdecode(as_user(GET => '/api/a', $handle)->{content})->{cred},
   'old@example.com', "0.9: the user's session works");
--- request
GET /calls
--- response_body_like
^calls=1 login=1$
--- error_log_level: notice



=== TEST 8: a worker killed during an append leaves a torn frame: the next append cuts it, and a restart finds every frame
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my $state = state_of(8);
my (undef, $a) = login('ida@example.com');
ok(wait_until(sub { -e $state }), 'a snapshot');
my (undef, $b) = login('jon@example.com');
ok(wait_until(sub { -s "$state.journal" }), 'a frame in the journal');
# what a worker killed in the middle of its write leaves: part of a frame
open my $fh, '>>:raw', "$state.journal" or die;
print $fh pack('V', 400), 'y' x 150;
close $fh;
revoke();
is(as_user(GET => '/api/a', $a->{session})->{status}, 200, 'a refresh, appended after it');
like(join('', error_log_since(0)), qr/\[warn\].*154 bytes of a torn frame .* were cut/,
     'the torn bytes were cut');
restart_nginx('KILL');
is(as_user(GET => '/api/b', $a->{session})->{status}, 200, 'the session is back');
is(as_user(GET => '/api/c', $b->{session})->{status}, 200, 'and the other one');
revoke();
is(as_user(GET => '/api/d', $a->{session})->{status}, 200, 'refreshed again');
is(stats()->{reuse}, 0, 'with the rotated token');
--- request
GET /calls
--- response_body_like
^calls=5 login=2 refresh=3$
--- error_log_level: notice



=== TEST 9: a session in use is not taken for an idle one after a restart: its use reaches the journal now and then
The session's token outlives the idle time; without a refresh, only the
uses say that the session is alive.
--- http_config
    tokenrefresh_zone users:4m session_idle=3s session_lifetime=1d
                      state=$TEST_NGINX_STATE_DIR/j9.state
                      key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my (undef, $a) = login('kim@example.com');
my (undef, $b) = login('lea@example.com');
# seconds of wall clock against a timeout: not under valgrind, too slow
if ($ENV{TEST_NGINX_USE_VALGRIND}) {
    pass('timing skipped under valgrind');
    return;
}
# kim uses the session for four seconds; lea does not
my ($ok, $n) = (0, 0);
my $t0 = time;
while (time < $t0 + 4) {
    $ok++ if as_user(GET => "/api/u$n", $a->{session})->{status} == 200;
    $n++;
    sleep 0.2;
}
is($ok, $n, "$n uses over four seconds, all served");
restart_nginx('KILL');
is(as_user(GET => '/api/x', $a->{session})->{status}, 200,
   'the session in use is alive after kill -9');
is(as_user(GET => '/api/y', $b->{session})->{status}, 401,
   'the idle one has ended');
--- request
GET /calls
--- response_body_like
^calls=2 login=2$
--- error_log_level: notice
