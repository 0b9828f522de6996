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
                              CLEANUP => !$ENV{FLEET_KEEP});
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



