# Users' sessions (issue 13): the app logs its user in through nginx, keeps
# a handle, and never sees a token; refreshes once per session across
# workers; a refused refresh, an unknown handle, a logout, idle and
# lifetime end a session with one documented answer.
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

my $dir = File::Temp::tempdir('tokenrefresh-sessions-XXXXXX', TMPDIR => 1,
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

add_block_preprocessor(sub {
    my $block = shift;

    return if $block->must_die;

    # a crash or a request counted wrong fails any test of this file
    $block->set_value('no_error_log', "[alert]\n[crit]\n"
                                      . ($block->no_error_log // ''));

    $block->set_value('http_config', <<'_EOC_' . ($block->http_config // ''))
    tokenrefresh_zone users:4m session_idle=1h session_lifetime=1d;
_EOC_
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

=== TEST 1: a login through nginx: the app gets the backend's answer without the tokens, and a handle
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my ($st, $body, $h, $raw) = login('ann@example.com',
                                  headers => { 'Accept-Language' => 'fr' });
is($st, 201, 'the backend status');
unlike($raw, qr/at-|rt-|"token"|refreshToken/, 'no token in the answer');
is($body->{user}{email}, 'ann@example.com', 'the rest of the answer is there');
is($body->{user}{locale}, 'fr', 'as the backend wrote it');
ok(defined $body->{expiresIn}, 'expiresIn kept');
like($body->{session} // '', qr/^[A-Za-z0-9_-]{43}$/, 'a 256-bit handle');
like($h->{'set-cookie'} // '', qr/^__Host-session=\Q$body->{session}\E; Path=\/; HttpOnly; Secure; SameSite=Strict$/,
     'the cookie, with its flags');
is($h->{'cache-control'}, 'no-store', 'not cached');
is($h->{'content-length'}, length $raw, 'the length of the new body');
my $r = as_user(GET => '/api/me', $body->{session});
is($r->{status}, 200, 'the handle gets the user to the API');
is(jdecode($r->{content})->{cred}, 'ann@example.com', "with the user's token");
my ($st2, $body2) = login('ann@example.com');
isnt($body2->{session}, $body->{session}, 'a new login, a new handle');
is(as_user(GET => '/api/me', $body->{session})->{status}, 200, 'both devices work');
--- request
GET /calls
--- response_body_like
^calls=2 login=2$



=== TEST 2: no handle, an unknown handle, a forged one: the session-ended answer, and no call anywhere
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my @cases = (
    [ 'no handle',        {} ],
    [ 'unknown handle',   { 'X-Session' => 'A' x 43 } ],
    [ 'forged handle',    { 'X-Session' => '../../etc/passwd' } ],
    [ 'unknown cookie',   { Cookie => '__Host-session=' . ('b' x 43) } ],
);
for my $c (@cases) {
    my $r = hit(GET => '/api/x', headers => $c->[1]);
    is($r->{status}, 401, "$c->[0]: 401");
    is($r->{headers}{'www-authenticate'},
       'Bearer error="invalid_token", error_description="the session has ended"',
       "$c->[0]: WWW-Authenticate");
    is($r->{headers}{'cache-control'}, 'no-store', "$c->[0]: no-store");
    is($r->{headers}{'content-type'}, 'application/json', "$c->[0]: JSON");
    is(jdecode($r->{content})->{error}, 'session_ended', "$c->[0]: the body");
    like($r->{headers}{'set-cookie'} // '', qr/^__Host-session=; .*Max-Age=0$/,
         "$c->[0]: the cookie cleared");
}
is(scalar api_requests('/api/x'), 0, 'the API was never called');
--- request
GET /calls
--- response_body_like
^calls=0$



=== TEST 3: a refused refresh ends the session: the app gets the ended answer, and a new login works
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my (undef, $b) = login('bob@example.com');
is(as_user(GET => '/api/a', $b->{session})->{status}, 200, 'in');
# the backend revokes the user's whole grant: access and refresh tokens
control('revoke', { grants => 1 });
my $r = as_user(GET => '/api/b', $b->{session});
is($r->{status}, 401, 'the session has ended');
is(jdecode($r->{content})->{error}, 'session_ended', 'with the documented answer');
is(as_user(GET => '/api/c', $b->{session})->{status}, 401, 'and stays ended');
like(join('', error_log_since(0)), qr/session:[0-9a-f]{32} ended: its refresh was refused/,
     'said once in the error log');
my (undef, $b2) = login('bob@example.com');
is(as_user(GET => '/api/d', $b2->{session})->{status}, 200, 'a new login works');
--- request
GET /calls
--- response_body_like
^calls=3 login=2 refresh=1$
--- no_error_log
[error]



=== TEST 4: a revocation storm across 200 users, 2 workers, 400 concurrent requests: one refresh per user, every answer the user's own, no reuse
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my %handle;
for my $i (1 .. 200) {
    my ($st, $b) = login("u$i\@example.com");
    die "login $i: $st" unless $st == 201;
    $handle{"u$i\@example.com"} = $b->{session};
}
is(scalar(keys %handle), 200, '200 users logged in');
revoke();
mock(delay_ms => 300);
my @reqs = map {
    my $u = "u" . (1 + $_ % 200) . "\@example.com";
    { method => 'POST', uri => "/api/s?n=$_", body => "n=$_",
      headers => { 'X-Session' => $handle{$u} }, user => $u }
} 0 .. 399;
my @res = storm(requests => \@reqs, timeout => scaled(30));
my $ok = 0;
for my $i (0 .. $#reqs) {
    my $r = $res[$i];
    my $b = jdecode($r->{body} // '');
    $ok++ if ($r->{status} // 0) == 200 && ($b->{cred} // '') eq $reqs[$i]{user}
             && ($b->{query} // '') eq "n=$i" && $b->{body_len} == length "n=$i";
}
is($ok, 400, "every request 200, with the user's token and its own body");
my $s = stats();
is($s->{by_grant}{refresh}, 200, 'exactly one refresh per user');
is($s->{reuse}, 0, 'no refresh token sent twice');
--- request
GET /calls
--- response_body_like
^calls=400 login=200 refresh=200$
--- timeout: 60



=== TEST 5: logout ends the session everywhere, clears the cookie, and revokes the refresh token (RFC 7009); without revoke= no call
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
    location = /logout-local {
        tokenrefresh_session_logout users;
    }
--- init
mock(rotate => 1);
my (undef, $a) = login('cy@example.com');
my (undef, $b) = login('cy@example.com');
is(as_user(GET => '/api/a', $a->{session})->{status}, 200, 'device A in');
my $r = as_user(POST => '/logout', $a->{session});
is($r->{status}, 204, 'logout: 204');
like($r->{headers}{'set-cookie'} // '', qr/^__Host-session=; .*Max-Age=0$/, 'the cookie cleared');
is(as_user(GET => '/api/b', $a->{session})->{status}, 401, 'the handle is dead');
my ($rv) = grep { $_->{path} eq '/revoke' } @{ requests() };
like($rv->{body} // '', qr/^token=rt-[^&]+&token_type_hint=refresh_token$/, 'the refresh token was revoked');
is(as_user(GET => '/api/c', $b->{session})->{status}, 200, 'device B still in');
$r = as_user(POST => '/logout-local', $b->{session});
is($r->{status}, 204, 'a logout without revocation');
is(as_user(GET => '/api/d', $b->{session})->{status}, 401, 'ended too');
is(as_user(POST => '/logout', $b->{session})->{status}, 204, 'a second logout: the same answer');
is(as_user(GET => '/logout', $b->{session})->{status}, 405, 'GET cannot log out');
--- request
GET /calls
--- response_body_like
^calls=3 login=2 revoke=1$
--- no_error_log
[error]



=== TEST 6: a cookie handle must come from the app: Origin on the list or the request's own, or the CSRF header; never cross-site
--- config
    tokenrefresh_session_csrf_header X-Requested-With;
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
    location /app/ {
        tokenrefresh_session users;
        tokenrefresh_session_origins https://app.example.com http://localhost:3000;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my (undef, $b) = login('di@example.com');
my $cookie = "__Host-session=$b->{session}";
my $own = "http://127.0.0.1:$Test::Nginx::Util::ServerPortForClient";
my @cases = (
    [ GET  => '/api/a', {}, 200, 'a GET with the cookie' ],
    [ POST => '/api/a', {}, 403, 'a POST with neither Origin nor the header' ],
    [ POST => '/api/a', { Origin => $own }, 200, 'a POST from its own origin' ],
    [ POST => '/api/a', { Origin => 'https://evil.example' }, 403, 'a POST from another origin' ],
    [ GET  => '/api/a', { Origin => 'https://evil.example' }, 403, 'a GET from another origin' ],
    [ POST => '/api/a', { 'X-Requested-With' => 'XMLHttpRequest' }, 200, 'a POST with the CSRF header' ],
    [ GET  => '/api/a', { 'Sec-Fetch-Site' => 'cross-site' }, 403, 'Sec-Fetch-Site: cross-site' ],
    [ DELETE => '/app/a', { Origin => 'https://app.example.com' }, 200, 'an origin on the list' ],
    [ DELETE => '/app/a', { Origin => $own }, 403, 'with a list, only the list' ],
    [ DELETE => '/app/a', { Origin => 'https://app.example.com.evil.example' }, 403, 'exactly' ],
);
for my $c (@cases) {
    my $r = hit($c->[0] => $c->[1], headers => { Cookie => $cookie, %{ $c->[2] } });
    is($r->{status}, $c->[3], $c->[4]);
}
# a native app's header handle is no browser's: no CSRF rule
is(hit(POST => '/api/n', headers => { 'X-Session' => $b->{session} })->{status}, 200,
   'a POST with the header handle');
--- request
GET /calls
--- response_body_like
^calls=1 login=1$



=== TEST 7: idle timeout and absolute lifetime
--- http_config
    tokenrefresh_zone users:4m session_idle=2s session_lifetime=5s;
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my (undef, $busy) = login('ed@example.com');
my (undef, $idle) = login('fay@example.com');
# seconds of wall clock against a timeout: not under valgrind, too slow
if ($ENV{TEST_NGINX_USE_VALGRIND}) {
    pass('timing skipped under valgrind');
    return;
}
my $t0 = time;
my @busy;
while (time - $t0 < 4.4) {
    push @busy, as_user(GET => '/api/a', $busy->{session})->{status};
    select undef, undef, undef, 0.8;
}
is(scalar(grep { $_ != 200 } @busy), 0, 'a session in use lives past its idle time');
is(as_user(GET => '/api/b', $idle->{session})->{status}, 401, 'an idle one has ended');
select undef, undef, undef, 5.2 - (time - $t0) if time - $t0 < 5.2;
is(as_user(GET => '/api/c', $busy->{session})->{status}, 401, 'and the busy one at its lifetime');
my $log = join '', error_log_since(0);
like($log, qr/session:[0-9a-f]{32} ended: it was idle too long/, 'idle, said at info');
like($log, qr/session:[0-9a-f]{32} ended: it reached its lifetime/, 'lifetime, said at info');
--- request
GET /calls
--- response_body_like
^calls=2 login=2$
--- error_log_level: info
--- timeout: 20



=== TEST 8: a full zone ends the least recently used sessions, never a named credential
--- http_config
    tokenrefresh_zone users:64k max_token_size=1k;
--- config
    location = /_login {
        internal;
        tokenrefresh_json_access_token /access_token;
        tokenrefresh_json_refresh_token /refresh_token;
        proxy_set_body "grant_type=client_credentials&client_id=svc";
        proxy_pass http://idp/token;
    }
    location /svc/ {
        tokenrefresh users svc;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/svc/a')->{status}, 200, 'the named credential logged in');
my @h;
for my $i (1 .. 150) {
    my ($st, $b) = login("v$i\@example.com");
    die "login $i: $st" unless $st == 201;
    push @h, $b->{session};
    hit(GET => '/svc/keep') if $i % 50 == 0;
}
is(as_user(GET => '/api/last', $h[-1])->{status}, 200, 'the newest session works');
is(as_user(GET => '/api/first', $h[0])->{status}, 401, 'the oldest was ended');
is(hit(GET => '/svc/b')->{status}, 200, 'the named credential is still there');
my $log = join '', error_log_since(0);
like($log, qr/zone "users" is full, ending the least recently used session "session:[0-9a-f]{32}"/,
     'said at notice');
unlike($log, qr/evicting idle credential "svc"/, 'the named credential was never evicted');
--- request
GET /calls
--- response_body_like
^calls=151 client_credentials=1 login=150$
--- error_log_level: notice



=== TEST 9: sessions survive a restart (the state file), a reload, and a reload that resizes the zone
--- http_config
    tokenrefresh_zone users:4m state=$TEST_NGINX_STATE_DIR/s9.state
                      key=$TEST_NGINX_STATE_DIR/key;
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(rotate => 1);
my (undef, $a) = login('gil@example.com', headers => { 'Accept-Language' => 'de' });
my (undef, $b) = login('hal@example.com');
is(as_user(GET => '/api/a', $a->{session})->{status}, 200, 'in');
restart_nginx('QUIT');
is(as_user(GET => '/api/b', $a->{session})->{status}, 200, 'after a restart');
like(join('', error_log_since(0)), qr/restored from ".*s9.state" \(2 of them users' sessions\)/,
     'restored from the state file');
revoke();
is(as_user(GET => '/api/c', $a->{session})->{status}, 200, 'a refresh after the restart');
my ($rf) = grep { $_->{path} eq '/api/tokens/refresh' } @{ requests() };
is($rf->{headers}{'accept-language'}, 'de', 'with the value the login kept');
reload_nginx();
is(as_user(GET => '/api/d', $b->{session})->{status}, 200, 'after a reload');
resize('users:4m', 'users:8m');
reload_nginx();
is(as_user(GET => '/api/e', $a->{session})->{status}, 200, 'after a resizing reload');
is(as_user(GET => '/api/f', $b->{session})->{status}, 200, 'both');
is(as_user(GET => '/api/g', 'A' x 43)->{status}, 401, 'and nothing else');
is(stats()->{reuse}, 0, 'no refresh token spent twice');
--- request
GET /calls
--- response_body_like
^calls=4 login=2 refresh=2$
--- error_log_level: notice



=== TEST 10: the status page counts sessions, lists no session and no token; an operator ends one session, or every session of a user
--- http_config
    tokenrefresh_zone users:4m;
    log_format sess '$tokenrefresh_credential';
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
    access_log logs/sess.log sess;
--- init
mock(jwt => 1);
my (undef, $a1) = login('ida@example.com');
my (undef, $a2) = login('ida@example.com');
my (undef, $b) = login('jo@example.com');
is(as_user(GET => '/api/a', $b->{session})->{status}, 200, 'in');
my $st = hit(GET => '/status');
my $z = jdecode($st->{content})->{zones}{users};
is($z->{sessions}{live}, 3, 'three live sessions');
is($z->{sessions}{created}, 3, 'three created');
is(scalar keys %{ $z->{credentials} }, 0, 'sessions are not listed');
unlike($st->{content}, qr/eyJ|rt-|\Q$b->{session}\E/, 'no token, no handle');
like(hit(GET => '/status?format=prometheus')->{content},
     qr/^tokenrefresh_zone_sessions\{zone="users"\} 3$/m, 'Prometheus');
# the label the access log shows for jo's request
open my $fh, '<', "$Test::Nginx::Util::ServRoot/logs/sess.log" or die $!;
my ($label) = grep { /^session:/ } map { chomp; $_ } <$fh>;
close $fh;
like($label, qr/^session:[0-9a-f]{32}$/, 'the access log names the session');
my $r = hit(POST => '/status?zone=users&action=end&session=' . substr($label, 8, 16));
is($r->{status}, 200, 'ended by its fingerprint');
is(as_user(GET => '/api/b', $b->{session})->{status}, 401, 'that session is over');
$r = hit(POST => '/status?zone=users&action=end&subject=ida%40example.com');
like($r->{content}, qr/ended 2/, "every session of ida's");
is(as_user(GET => '/api/c', $a1->{session})->{status}, 401, 'device 1 out');
is(as_user(GET => '/api/d', $a2->{session})->{status}, 401, 'device 2 out');
is(hit(POST => '/status?zone=users&action=end&session=0123456789ab')->{status}, 404,
   'no such session');
$z = jdecode(hit(GET => '/status')->{content})->{zones}{users};
is($z->{sessions}{live}, 0, 'none left');
is($z->{sessions}{operator}, 3, 'three ended by an operator');
--- request
GET /calls
--- response_body_like
^calls=3 login=3$



=== TEST 11: one connection, several users: each request counts with its own handle (keep-alive; and HTTP/2)
A connection remembers the last handle it carried and its digest; a
different handle on the same connection must be looked up again.
--- config
    listen 127.0.0.1:$TEST_NGINX_H2_PORT http2;

    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
        add_header X-Conn $connection always;
    }
--- init
my (undef, $a) = login('kay@example.com');
my (undef, $b) = login('lou@example.com');
my $ua = HTTP::Tiny->new(keep_alive => 1);
my $port = $Test::Nginx::Util::ServerPortForClient;
my (@who, @h2, %conn);
for my $h ($a, $b, $a, $b, { session => 'A' x 43 }, $a) {
    my $r = $ua->get("http://127.0.0.1:$port/api/k",
                     { headers => { 'X-Session' => $h->{session} } });
    $conn{ $r->{headers}{'x-conn'} }++;
    push @who, $r->{status} == 200 ? jdecode($r->{content})->{cred} : $r->{status};
}
is(scalar keys %conn, 1, 'one keep-alive connection');
is("@who", 'kay@example.com lou@example.com kay@example.com lou@example.com 401 kay@example.com',
   'each request with its own user');
# HTTP/2 (curl 7.88 cannot send a second request on an h2c connection it
# opened with prior knowledge: one stream per connection here)
for my $h ($a, $b) {
    my $out = `curl -s --http2-prior-knowledge -H 'X-Session: $h->{session}' http://127.0.0.1:$ENV{TEST_NGINX_H2_PORT}/api/h`;
    push @h2, $out =~ /"cred":"([^"]+)"/ ? $1 : '?';
}
is("@h2", 'kay@example.com lou@example.com', 'over HTTP/2, each with its own user');
--- request
GET /calls
--- response_body_like
^calls=2 login=2$



=== TEST 12: a login answered while a reload resizes the zone: 503 with Retry-After, never a handle the new workers do not know
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 1500);
my $h = fire(POST => '/login',
             headers => { 'Content-Type' => 'application/json' },
             body => '{"email":"max@example.com","password":"secret-max@example.com"}');
ok(wait_until(sub { calls() =~ /login=1/ }, 5), 'a login at the backend');
resize('users:4m', 'users:8m');
reload_nginx();
mock(delay_ms => 0);
my $r = collect($h);
is($r->{status}, 503, 'answered in the replaced zone: 503');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
unlike($r->{body}, qr/"session"/, 'and no handle');
my (undef, $b) = login('max@example.com');
is(as_user(GET => '/api/a', $b->{session})->{status}, 200,
   'the login again, in the new zone: its handle works');
--- request
GET /calls
--- response_body_like
^calls=2 login=2$
--- timeout: 30




=== TEST 13: error_page for 401 takes over the session-ended answer, as for any other 401
--- config
    location /app/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
        error_page 401 = @signin;
    }
    location @signin {
        return 302 /signin;
    }
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $ua = HTTP::Tiny->new(max_redirect => 0);
my $port = $Test::Nginx::Util::ServerPortForClient;
my $r = $ua->get("http://127.0.0.1:$port/app/x",
                 { headers => { 'X-Session' => 'A' x 43 } });
is($r->{status}, 302, 'error_page 401 = @signin: the redirect');
like($r->{headers}{location} // '', qr{/signin$}, 'to the sign-in page');
unlike($r->{content}, qr/session_ended/, 'not the JSON answer');
my (undef, $a) = login('pia@example.com');
is(as_user(GET => '/app/y', $a->{session})->{status}, 200, 'a live session passes');
$r = as_user(GET => '/api/z', 'A' x 43);
is($r->{status}, 401, 'without error_page: the documented answer');
is(jdecode($r->{content})->{error}, 'session_ended', 'as before');
--- request
GET /calls
--- response_body_like
^calls=1 login=1$
