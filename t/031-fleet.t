# A fleet (issue 14): three nginx nodes, two workers each, share one zone
# through a real redis-server: one refresh in the fleet for a storm spread
# over the nodes, a rotated refresh token never sent twice across
# restarts, redis lost and back, a provider slower than a fixed lock.
# Node 1 is Test::Nginx's; nodes 2 and 3 run its configuration on ports
# of their own, each with its own state file.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();
use File::Path qw(make_path);
use JSON::PP;

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

plan(skip_all => 'three nginx nodes under valgrind: too slow')
    if $ENV{TEST_NGINX_USE_VALGRIND};

my $base = $ENV{TEST_NGINX_MOCK_PORT} // 19850;
my $redis_port = $ENV{TEST_NGINX_REDIS_PORT} //= $base + 40;
my %node_port = (2 => $base + 41, 3 => $base + 42);

my $dir = File::Temp::tempdir('tokenrefresh-fleet-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_FLEET_DIR} = $dir;

sub put {
    my ($name, $content) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $content;
    close $fh;
    chmod 0600, "$dir/$name";
}

# the zone's key, the same on every node; the seed every node is given
put('key', join('', map { sprintf '%02x', int rand 256 } 1 .. 32) . "\n");
put('seed', "rt-fleet-seed\n");
put('key2', join('', map { sprintf '%02x', int rand 256 } 1 .. 32) . "\n");

# a redis of the block's own, on loopback; "keep" restarts it with its data
sub redis_start {
    my (%o) = @_;
    redis_stop();
    unlink "$dir/dump.rdb" unless $o{keep};
    system('redis-server', '--port', $redis_port, '--bind', '127.0.0.1',
           '--save', '', '--appendonly', 'no', '--dir', $dir,
           '--repl-diskless-sync-delay', '0',
           '--dbfilename', 'dump.rdb', '--daemonize', 'yes',
           '--pidfile', "$dir/redis.pid", '--logfile', "$dir/redis.log") == 0
        or die "redis-server did not start";
    wait_until(sub { redis_cli('PING') eq 'PONG' }, 5)
        or die "redis does not answer";
}

# "SAVE" first keeps its data for the next start
sub redis_stop {
    my (%o) = @_;
    redis_cli('SAVE') if $o{save};
    open my $fh, '<', "$dir/redis.pid" or return;
    chomp(my $pid = <$fh>);
    kill 'KILL', $pid;
    wait_until(sub { !kill 0, $pid }, 5);
    unlink "$dir/redis.pid";
}

sub redis_cli {
    my $out = `redis-cli -p $redis_port --raw @_ 2>/dev/null`;
    chomp $out;
    return $out;
}

# outside the servroot, which Test::Nginx empties and removes itself
sub node_root { return "$dir/node$_[0]"; }

sub node_port {
    my ($n) = @_;
    return $n == 1 ? $Test::Nginx::Util::ServerPortForClient : $node_port{$n};
}

# node 2 or 3: the running configuration of node 1, its paths and port
# its own, its state file NODE<n>
sub node_start {
    my ($n) = @_;
    return start_nginx() if $n == 1;
    my $root = node_root($n);
    make_path("$root/logs", "$root/conf", "$root/html");
    open my $in, '<', $Test::Nginx::Util::ConfFile or die $!;
    my $conf = do { local $/; <$in> };
    close $in;
    my $sr = $Test::Nginx::Util::ServRoot;
    my $port = $Test::Nginx::Util::ServerPortForClient;
    $conf =~ s{\Q$sr\E/}{$root/}g;
    $conf =~ s{listen(\s+)$port;}{listen$1$node_port{$n};}g;
    $conf =~ s{NODE1}{NODE$n}g;
    open my $out, '>', "$root/conf/nginx.conf" or die $!;
    print $out $conf;
    close $out;
    my $from = length node_log($n);
    system("$Test::Nginx::Util::NginxBinary -p $root/ "
           . "-c $root/conf/nginx.conf") == 0
        or die "node $n did not start";
    wait_until(sub { my $r = eval { hit(GET => '/calls', port => $node_port{$n}) };
                     $r && $r->{status} == 200 }, 10)
        or die "node $n does not answer";
    # both workers connected to redis
    wait_until(sub { (() = substr(node_log($n), $from)
                               =~ /connected to redis/g) >= 2 }, 10);
}

sub node_pids {
    my ($n) = @_;
    my $pidfile = node_root($n) . '/logs/nginx.pid';
    open my $fh, '<', $pidfile or return ();
    chomp(my $master = <$fh>);
    my @pids = ($master);
    for (glob '/proc/[0-9]*/stat') {
        open my $s, '<', $_ or next;
        my @f = split ' ', <$s>;
        push @pids, $f[0] if $f[3] == $master;
    }
    return @pids;
}

# QUIT (graceful) or KILL (the master and its workers at once)
sub node_stop {
    my ($n, $how) = @_;
    return stop_nginx($how) if $n == 1;
    my @pids = node_pids($n) or return;
    kill(($how // 'QUIT') eq 'KILL' ? 'KILL' : 'QUIT',
         ($how // 'QUIT') eq 'KILL' ? @pids : $pids[0]);
    wait_until(sub { !grep { kill 0, $_ } @pids }, 20)
        or die "node $n did not stop";
    unlink node_root($n) . '/logs/nginx.pid';
}

sub node_log {
    my ($n) = @_;
    my $file = $n == 1 ? $Test::Nginx::Util::ErrLogFile
                       : node_root($n) . '/logs/error.log';
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}

# the block's fleet: an empty redis, nodes 2 and 3 (node 1 runs already)
sub fleet_up {
    redis_cli('FLUSHALL');
    node_start($_) for 2, 3;
}

# redis stays up until the next block: node 1 is still running
sub fleet_down {
    node_stop($_, 'QUIT') for 2, 3;
}

# whatever happened: every process of this file's nodes and redis goes
sub reap {
    my @pids = map { node_pids($_) } 2, 3;
    for (glob '/proc/[0-9]*/cmdline') {
        open my $fh, '<', $_ or next;
        my $cmd = <$fh> // next;
        push @pids, m{/proc/(\d+)/} if index($cmd, "$dir/") >= 0;
    }
    kill 'KILL', @pids if @pids;
}

END { reap(); redis_stop() }

# a request to node n: (status, body)
sub on {
    my ($n, $uri) = @_;
    my $r = hit(GET => $uri, port => node_port($n));
    return ($r->{status}, $r->{content} // '');
}

# up before node 1 starts, for all the blocks
redis_start();

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_
        for qw(redis_start redis_stop redis_cli node_start node_stop
               node_port node_log fleet_up fleet_down on put);
}

# every block: the seed's grant at the mock; a block without an /api/
# location of its own gets this one, and its token location
my $api = <<'_EOC_';
    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh fleet billing;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    return if defined $block->must_die;
    $block->set_value('config', $api . ($block->config // ''))
        unless ($block->config // '') =~ m{location /api/};
    $block->set_value('init',
        'control("grant", { cred => "billing", '
        . 'refresh_token => "rt-fleet-seed" }); ' . ($block->init // ''));
});

run_tests();

__DATA__

=== TEST 1: redis= needs the zone's key: nginx -t says so, with the file and line
--- http_config
    tokenrefresh_zone fleet:1m redis=127.0.0.1:6379;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"redis=" needs "state=" and "key=": the fleet's records are sealed under the zone's key, the same on every node in .*nginx\.conf:\d+/



=== TEST 2: redis_prefix= without redis= is refused
--- http_config
    tokenrefresh_zone fleet:1m redis_prefix=app:;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"redis_prefix=" and "redis_replicas=" need "redis="/



=== TEST 2b: two zones on one redis with one prefix would share keys and leases: refused
--- http_config
    tokenrefresh_zone one:1m state=$TEST_NGINX_FLEET_DIR/a.state
                             key=$TEST_NGINX_FLEET_DIR/key
                             redis=127.0.0.1:6379 redis_prefix=app:;
    tokenrefresh_zone two:1m state=$TEST_NGINX_FLEET_DIR/b.state
                             key=$TEST_NGINX_FLEET_DIR/key
                             redis=127.0.0.1:6379 redis_prefix=app:;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*zone "one" already uses redis "127.0.0.1:6379" with the prefix "app:": give this one another "redis_prefix=" in .*nginx\.conf:\d+/



=== TEST 2c: a port out of range is said as such
--- http_config
    tokenrefresh_zone one:1m state=$TEST_NGINX_FLEET_DIR/a.state
                             key=$TEST_NGINX_FLEET_DIR/key
                             redis=127.0.0.1:99999;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "redis=127.0.0.1:99999": a port from 1 to 65535 is expected in .*nginx\.conf:\d+/



=== TEST 2d: an empty prefix
--- http_config
    tokenrefresh_zone one:1m state=$TEST_NGINX_FLEET_DIR/a.state
                             key=$TEST_NGINX_FLEET_DIR/key
                             redis=127.0.0.1:6379 redis_prefix=;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"redis_prefix=" must have 1 to 128 bytes/



=== TEST 2e: redis= twice
--- http_config
    tokenrefresh_zone one:1m state=$TEST_NGINX_FLEET_DIR/a.state
                             key=$TEST_NGINX_FLEET_DIR/key
                             redis=127.0.0.1:6379 redis=127.0.0.1:6380;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"redis=" is duplicate/



=== TEST 3: a revocation storm over three nodes: one token call in the fleet; the other nodes take its tokens; every client its own answer
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t3.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT
                               redis_prefix=t3:;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
    location = /status {
        tokenrefresh_status;
    }
--- init
fleet_up();
mock(rotate => 1);
# the seed is spent once, by one node; the others take the fleet's tokens
my @first = map { [ on($_, "/api/first-$_") ] } 1, 2, 3;
is(join(' ', map { $_->[0] } @first), '200 200 200', 'each node: 200');
like(calls(), qr/^calls=1 refresh_token=1$/, 'the seed was spent once');
revoke();
mock(delay_ms => 300);
my @req = map { { method => 'GET', uri => "/api/item/$_",
                  port => node_port(1 + $_ % 3) } } 1 .. 600;
my @res = storm(requests => \@req, timeout => 60);
my @ok = grep { $res[$_]{status} == 200
                && $res[$_]{body} =~ m{"path":"/api/item/@{[$_ + 1]}"} }
         0 .. $#res;
is(scalar @ok, 600, '600 clients over three nodes: each got 200 and its own answer');
my %by = map { (1 + $_ % 3) => 1 } 1 .. 600;
is(scalar keys %by, 3, 'spread over the three nodes');
is(stats()->{reuse}, 0, 'no refresh token sent twice');
my $adopted = 0;
for my $n (1 .. 3) {
    my $r = hit(GET => '/status', port => node_port($n));
    my $st = JSON::PP::decode_json($r->{content});
    $adopted += $st->{zones}{fleet}{fleet}{adopted};
    is($st->{zones}{fleet}{fleet}{connected_workers}, 2,
       "node $n: both workers connected to redis");
}
is($adopted, 4, 'the other two nodes took the fleet\'s tokens twice each');
my @gens = map { JSON::PP::decode_json(hit(GET => '/status', port => node_port($_))
                                       ->{content})
                     ->{zones}{fleet}{credentials}{billing}{token}{fleet_generation} }
           1 .. 3;
is("@gens", '2 2 2', 'every node holds the fleet\'s generation 2');
my $dump = join "\n", map { redis_cli('HGET', $_, 'r') }
                      split /\n/, redis_cli('KEYS', "'t3:*'");
unlike($dump, qr/rt-fleet-seed|rt-\d|at-\d/, 'redis holds no token in clear');
like($dump, qr/\S/, 'redis holds the sealed record');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=2 refresh_token=2$
--- no_error_log
[error]
[crit]
[alert]
--- timeout: 90



=== TEST 4: 50 rotations over three nodes restarted (QUIT, kill -9), one down for ten rotations and started with its old state file: one refresh each, none sent twice, no request failed
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t4.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh fleet billing;
        tokenrefresh_refresh /_refresh;
        # the loop guard's ration refills fast: a rejection a round
        tokenrefresh_backoff 1ms 20ms;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
fleet_up();
mock(rotate => 1);
my %up = (1 => 1, 2 => 1, 3 => 1);
my ($failed, $sent, @calls) = (0, 0);
for my $round (1 .. 50) {
    if ($round == 10) { node_stop(2, 'QUIT'); node_start(2); }
    if ($round == 20) { node_stop(3, 'KILL'); node_start(3); }
    if ($round == 25) { node_stop(1, 'KILL'); node_start(1); }
    if ($round == 30) { node_stop(2, 'QUIT'); delete $up{2}; }
    if ($round == 40) { node_start(2); $up{2} = 1; }
    revoke() if $round > 1;
    my @nodes = sort keys %up;
    my @req = map { { method => 'GET', uri => "/api/r$round-$_",
                      port => node_port($nodes[$_ % @nodes]) } } 1 .. 9;
    my @res = storm(requests => \@req, timeout => 30);
    $sent += @res;
    for my $i (grep { $res[$_]{status} != 200 } 0 .. $#res) {
        $failed++;
        diag("round $round: $req[$i]{uri} on port $req[$i]{port}: "
             . "$res[$i]{status} $res[$i]{body}");
    }
    push @calls, calls();
}
is($failed, 0, "$sent requests over the rounds: none failed");
is(stats()->{reuse}, 0, 'no refresh token sent twice');
is($calls[-1], 'calls=50 refresh_token=50', 'one refresh a round');
my $log = node_log(2);
like($log, qr/took the fleet's generation (4\d|3\d)/,
     'node 2, back with its old state file, took the fleet\'s tokens');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=50 refresh_token=50$
--- no_error_log
[crit]
[alert]
--- timeout: 180



=== TEST 5: redis away: valid tokens still served; a refresh token is not sent, requests that need one fail with the failure status and Retry-After; redis back empty: one refresh, nothing sent twice
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t5.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh fleet billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_refresh_timeout 1s;
        tokenrefresh_backoff 200ms 1s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /status {
        tokenrefresh_status;
    }
--- init
fleet_up();
mock(rotate => 1);
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
redis_stop();
is(join(' ', map { (on($_, "/api/b$_"))[0] } 1 .. 3), '200 200 200',
   'redis away: valid tokens still served');
revoke();
my $r = hit(GET => '/api/c', port => node_port(2));
is($r->{status}, 502, 'a request that needs a refresh fails');
ok($r->{headers}{'retry-after'}, 'with Retry-After');
is(calls(), 'calls=1 refresh_token=1', 'no refresh token sent while redis is away');
like(node_log(2), qr/waits for the fleet's redis: a refresh token is not sent without the fleet's lease/,
     'the error log says why');
redis_start();
ok(wait_until(sub { my $ok = 1;
                    for my $n (1 .. 3) {
                        my $st = JSON::PP::decode_json(
                            hit(GET => '/status', port => node_port($n))->{content});
                        $ok = 0 unless $st->{zones}{fleet}{fleet}{connected_workers} == 2;
                    }
                    $ok }, 15), 'every worker connected again');
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/d$_",
                                      port => node_port(1 + $_ % 3) } } 1 .. 30 ],
                timeout => 30);
is(scalar(grep { $_->{status} == 200 } @res), 30, 'after it: every request 200');
is(calls(), 'calls=2 refresh_token=2', 'one refresh after redis came back');
is(stats()->{reuse}, 0, 'no refresh token sent twice');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=2 refresh_token=2$
--- no_error_log
[crit]
[alert]
--- timeout: 90



=== TEST 6: a provider slower than a two-second lock: still one refresh in the fleet
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t6.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh fleet billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_refresh_timeout 8s;
        tokenrefresh_wait_timeout 8s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
fleet_up();
mock(rotate => 1);
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
revoke();
mock(delay_ms => 3000);
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/s$_",
                                      port => node_port(1 + $_ % 3) } } 1 .. 60 ],
                timeout => 30);
is(scalar(grep { $_->{status} == 200 } @res), 60, 'every request 200');
is(calls(), 'calls=2 refresh_token=2', 'a refresh of 3 s: the only one');
is(stats()->{reuse}, 0, 'no refresh token sent twice');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=2 refresh_token=2$
--- no_error_log
[crit]
[alert]
--- timeout: 60



=== TEST 7: everyone learns at once: a node that did not refresh hears of the new generation, and its next request carries the new token, not the revoked one
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t7.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
    location = /status {
        tokenrefresh_status;
    }
--- init
fleet_up();
mock(rotate => 1);
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
revoke();
is((on(1, '/api/b'))[0], 200, 'node 1: rejected, refreshed, replayed');
sub heard {
    my ($n) = @_;
    my $st = JSON::PP::decode_json(hit(GET => '/status',
                                       port => node_port($n))->{content});
    return $st->{zones}{fleet}{fleet}{news};
}
ok(wait_until(sub { heard(2) >= 2 && heard(3) >= 2 }, 5)
   || diag('heard: ' . heard(2) . ' ' . heard(3)),
   'nodes 2 and 3: both workers heard of the new generation');
is((on(2, '/api/c'))[0], 200, 'node 2: 200');
is(scalar(api_requests('/api/c')), 1,
   'node 2 sent the new token at once: no 401, no replay');
is((on(3, '/api/d'))[0], 200, 'node 3: 200');
is(scalar(api_requests('/api/d')), 1, 'node 3 too');
is(calls(), 'calls=2 refresh_token=2', 'one refresh in the fleet');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=2 refresh_token=2$
--- no_error_log
[error]
[crit]
[alert]
--- timeout: 30



=== TEST 8: a user's session created on one node is used on another and ended on a third; a refresh of it is one in the fleet; an unknown handle is not asked of redis again and again
--- http_config
    tokenrefresh_zone users:4m state=$TEST_NGINX_FLEET_DIR/NODE1-t8.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
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
        tokenrefresh_session_logout users;
    }

    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
fleet_up();
mock(rotate => 1);
my $json = JSON::PP->new;
my $r = hit(POST => '/login', port => node_port(1),
            headers => { 'Content-Type' => 'application/json',
                         'Accept-Language' => 'fr' },
            body => '{"email":"ann@example.com","password":"secret-ann@example.com"}');
is($r->{status}, 201, 'node 1: logged in');
my $handle = $json->decode($r->{content})->{session};
my $as = sub {
    my ($n, $uri) = @_;
    return hit(GET => $uri, port => node_port($n),
               headers => { 'X-Session' => $handle });
};
$r = $as->(2, '/api/me');
is($r->{status}, 200, 'node 2 serves the session made on node 1');
like($r->{content}, qr/"cred":"ann\@example.com"/, "with the user's token");
revoke();
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/s$_",
                                      port => node_port(1 + $_ % 2),
                                      headers => { 'X-Session' => $handle } } }
                              1 .. 40 ], timeout => 30);
is(scalar(grep { $_->{status} == 200 } @res), 40,
   'a revoked token: 40 requests over two nodes, all 200');
like(calls(), qr/^calls=2 login=1 refresh=1$/, 'one refresh in the fleet');
is(stats()->{reuse}, 0, 'no refresh token sent twice');
# node 3 has not seen the session; nodes 1 and 2 hold an older generation
# each time another refreshes: they hear of it, and check before sending
revoke();
is($as->(2, '/api/t')->{status}, 200, 'node 2 refreshes it again');
revoke();
@res = storm(requests => [ map { { method => 'GET', uri => "/api/u$_",
                                   port => node_port(1 + $_ % 3),
                                   headers => { 'X-Session' => $handle } } }
                           1 .. 90 ], timeout => 30);
is(scalar(grep { $_->{status} == 200 } @res), 90,
   'revoked again: 90 requests over three nodes, all 200');
like(calls(), qr/^calls=4 login=1 refresh=3$/, 'one refresh each time');
is(stats()->{reuse}, 0, 'still none sent twice');
is(hit(POST => '/logout', port => node_port(3),
       headers => { 'X-Session' => $handle })->{status}, 204,
   'node 3, which never saw it, logs it out');
ok(wait_until(sub { $as->(1, '/api/x')->{status} == 401
                    && $as->(2, '/api/y')->{status} == 401 }, 5),
   'then it has ended on nodes 1 and 2 as well');
like($as->(2, '/api/z')->{content}, qr/session_ended/, 'the session-ended answer');
my $evals = sub { (redis_cli('INFO', 'commandstats') =~ /cmdstat_eval:calls=(\d+)/)[0] // 0 };
my $before = $evals->();
my $forged = 'A' x 43;
my $n401 = grep { hit(GET => '/api/f', port => node_port(2),
                      headers => { 'X-Session' => $forged })->{status} == 401 } 1 .. 20;
is($n401, 20, 'a handle nobody knows: 20 times the session-ended answer');
cmp_ok($evals->() - $before, '<=', 2, 'and redis was asked at most once per worker');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=4 login=1 refresh=3$
--- no_error_log
[error]
[crit]
[alert]
--- timeout: 60



=== TEST 9: tokenrefresh_rotating off: with redis away, a provider that does not rotate refresh tokens is refreshed by each node alone
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t9.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh fleet billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_rotating off;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /status {
        tokenrefresh_status;
    }
--- init
fleet_up();
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
is(calls(), 'calls=1 refresh_token=1', 'one refresh in the fleet');
redis_stop();
revoke();
is(join(' ', map { (on($_, "/api/b$_"))[0] } 1 .. 2), '200 200',
   'redis away: nodes 1 and 2 refresh alone');
is(calls(), 'calls=3 refresh_token=3', 'one refresh each');
my $st = JSON::PP::decode_json(hit(GET => '/status')->{content});
is($st->{zones}{fleet}{fleet}{fallbacks}, 1, 'node 1 counts it');
redis_start();
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=3 refresh_token=3$
--- no_error_log
[crit]
[alert]
--- timeout: 30



=== TEST 10: redis_replicas=1: a store waits until a replica has it; without the replica, the error log says so and the lease goes anyway
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t10.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT
                               redis_replicas=1;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
--- init
redis_cli('FLUSHALL');
my $replica = $ENV{TEST_NGINX_REDIS_PORT} + 3;
my $dir = $ENV{TEST_NGINX_FLEET_DIR};
system('redis-server', '--port', $replica, '--bind', '127.0.0.1',
       '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
       '--replicaof', '127.0.0.1', $ENV{TEST_NGINX_REDIS_PORT},
       '--dir', $dir, '--dbfilename', 'replica.rdb',
       '--pidfile', "$dir/replica.pid", '--logfile', "$dir/replica.log") == 0
    or die "the replica did not start";
ok(wait_until(sub { `redis-cli -p $replica INFO replication`
                    =~ /master_link_status:up/ }, 10),
   'a replica, in sync');
mock(rotate => 1);
my $waits = sub { (redis_cli('INFO', 'commandstats') =~ /cmdstat_wait:calls=(\d+)/)[0] // 0 };
is(hit(GET => '/api/a')->{status}, 200, 'refreshed');
ok(wait_until(sub { $waits->() == 1 }, 5), 'its store waited for the replica');
my $r = `redis-cli -p $replica --raw HGET tokenrefresh:fleet:cred:billing g`;
chomp $r;
is($r, '1', 'which has the new generation');
unlike(join('', error_log_since(0)), qr/redis replicas/, 'in time');
open my $fh, '<', "$dir/replica.pid" or die;
chomp(my $pid = <$fh>);
kill 'KILL', $pid;
ok(wait_until(sub { redis_cli('INFO', 'replication') =~ /connected_slaves:0/ }, 10),
   'the replica is gone');
revoke();
is(hit(GET => '/api/b')->{status}, 200, 'refreshed again');
ok(wait_until(sub { join('', error_log_since(0))
                    =~ /\[warn\] .*the new tokens of credential "billing" reached 0 of 1 redis replicas in 500 ms/ }, 5),
   'the error log says the replica did not have it');
--- request
GET /calls
--- response_body_like
^calls=2 refresh_token=2$
--- no_error_log
[error]
[crit]
[alert]
--- timeout: 30



=== TEST 11: redis killed during a storm, while the refresh is at the provider, and started again, with its data and then without: no wedge, nothing sent twice, one refresh each time, every request 200
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t11.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
--- init
fleet_up();
mock(rotate => 1);
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
for my $keep (1, 0) {
    my $what = $keep ? 'with its data' : 'empty';
    my $n = calls() =~ /refresh_token=(\d+)/ ? $1 : 0;
    revoke();
    mock(delay_ms => 1000);
    my @h = map { my $port = node_port(1 + $_ % 3);
                  fire(GET => "/api/k$keep-$_", port => $port) }
            1 .. 30;
    ok(wait_until(sub { calls() =~ /refresh_token=@{[$n + 1]}/ }, 10),
       "$what: the refresh is at the provider");
    redis_stop(save => $keep);
    redis_start(keep => $keep);
    my @res = map { collect($_) } @h;
    is(scalar(grep { $_->{status} == 200 } @res), 30,
       "redis back $what: all 30 requests over three nodes 200");
    is(calls(), 'calls=' . ($n + 1) . ' refresh_token=' . ($n + 1),
       "$what: that one refresh only");
    mock(delay_ms => 0);
}
is(stats()->{reuse}, 0, 'no refresh token sent twice');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=3 refresh_token=3$
--- no_error_log
[crit]
[alert]
--- timeout: 90



=== TEST 12: a key rotated without downtime: a second key= opens what the first cannot, the first seals; state file and the fleet's records follow
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t12.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
--- init
redis_cli('FLUSHALL');
mock(rotate => 1);
my $dir = $ENV{TEST_NGINX_FLEET_DIR};
my $keys = sub {
    my ($new) = @_;
    my $conf = $Test::Nginx::Util::ConfFile;
    open my $in, '<', $conf or die;
    my $text = do { local $/; <$in> };
    close $in;
    $text =~ s{key=\S+(?:\s+key=\S+)?(\s+redis=)}{$new$1} or die "no key=";
    open my $out, '>', $conf or die;
    print $out $text;
    close $out;
};
is(hit(GET => '/api/a')->{status}, 200, 'under the old key');
$keys->("key=$dir/key2 key=$dir/key");
restart_nginx('QUIT');
is(hit(GET => '/api/b')->{status}, 200,
   'the new key seals, the old one opened the state file');
revoke();
is(hit(GET => '/api/c')->{status}, 200, 'a refresh, sealed with the new key');
$keys->("key=$dir/key2");
restart_nginx('KILL');
revoke();
is(hit(GET => '/api/d')->{status}, 200,
   'the old key gone: the state file and the journal open with the new one');
is(calls(), 'calls=3 refresh_token=3', 'the newest refresh token each time');
is(stats()->{reuse}, 0, 'none sent twice');
unlike(join('', error_log_since(0)), qr/another key|cannot be opened/,
       'nothing was refused');
--- request
GET /calls
--- response_body_like
^calls=3 refresh_token=3$
--- no_error_log
[crit]
[alert]
--- timeout: 40



=== TEST 13: a reload that resizes a node's zone while its refresh is at the provider: the result still goes to the fleet, the other nodes take it, nothing is sent twice
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t13.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
--- init
fleet_up();
mock(rotate => 1);
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
revoke();
mock(delay_ms => 1500);
my $h = fire(GET => '/api/b');
ok(wait_until(sub { calls() =~ /refresh_token=2/ }, 5),
   'node 1: a refresh at the provider');
my $conf = $Test::Nginx::Util::ConfFile;
open my $in, '<', $conf or die;
my $text = do { local $/; <$in> };
close $in;
$text =~ s/tokenrefresh_zone fleet:1m/tokenrefresh_zone fleet:2m/ or die;
open my $out, '>', $conf or die;
print $out $text;
close $out;
reload_nginx();
is(collect($h)->{status}, 200, 'node 1: handed over to the new zone, 200');
mock(delay_ms => 0);
is((on(2, '/api/c'))[0], 200, 'node 2 takes the result from the fleet');
is((on(3, '/api/d'))[0], 200, 'node 3 too');
is(calls(), 'calls=2 refresh_token=2', 'no other refresh');
is(stats()->{reuse}, 0, 'nothing sent twice');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=2 refresh_token=2$
--- no_error_log
[crit]
[alert]
--- timeout: 40



=== TEST 14: redis loses its data while the nodes run (FLUSHALL), then a node comes back with an old state file: the nodes give back what they hold first, and the old refresh token is never sent
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_FLEET_DIR/NODE1-t14.state
                               key=$TEST_NGINX_FLEET_DIR/key
                               redis=127.0.0.1:$TEST_NGINX_REDIS_PORT;
    tokenrefresh_seed fleet billing $TEST_NGINX_FLEET_DIR/seed;
--- config
--- init
fleet_up();
mock(rotate => 1);
is(join(' ', map { (on($_, "/api/a$_"))[0] } 1 .. 3), '200 200 200',
   'each node has the fleet\'s token');
node_stop(3, 'QUIT');
for my $round (1 .. 3) {
    revoke();
    is(join(' ', map { (on($_, "/api/r$round-$_"))[0] } 1, 2), '200 200',
       "rotation $round on nodes 1 and 2");
}
is(calls(), 'calls=4 refresh_token=4', 'three rotations while node 3 was down');
redis_cli('FLUSHALL');
ok(wait_until(sub { redis_cli('HGET', 'tokenrefresh:fleet:cred:billing', 'g') eq '4' }, 5),
   'the nodes that ran gave the fleet back its generation');
revoke();
node_start(3);
my ($st, $body) = on(3, '/api/after');
is($st, 200, 'node 3, back with its old state file: 200');
is(stats()->{reuse}, 0, 'its old refresh token was never sent');
is(calls(), 'calls=5 refresh_token=5', 'one refresh for the revocation');
fleet_down();
--- request
GET /calls
--- response_body_like
^calls=5 refresh_token=5$
--- no_error_log
[crit]
[alert]
--- timeout: 40
