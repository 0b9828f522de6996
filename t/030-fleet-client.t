# The fleet's redis client (issue 14, first piece): a zone with redis=
# connects from each worker, authenticates, reconnects after an outage
# and says so once; nginx -t refuses what would block a worker.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();

master_on();
workers(2);
no_shuffle();

my $dir = File::Temp::tempdir('tokenrefresh-redis-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
chmod 0755, $dir;
$ENV{TEST_NGINX_REDIS_DIR} = $dir;

sub put {
    my ($name, $content, $mode) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $content;
    close $fh;
    chmod $mode // 0600, "$dir/$name";
}

put('password', "s3cret-pw\n");
put('password-open', "s3cret-pw\n", 0644);
put('password-wrong', "not-it\n");
put('key', join('', map { sprintf '%02x', int rand 256 } 1 .. 32) . "\n");

# a redis of its own, on a unix socket, with a password
sub redis_start {
    system('redis-server', '--port', '0', '--unixsocket', "$dir/redis.sock",
           '--unixsocketperm', '777', '--save', '', '--appendonly', 'no',
           '--requirepass', 's3cret-pw', '--daemonize', 'yes',
           '--pidfile', "$dir/redis.pid", '--logfile', "$dir/redis.log") == 0
        or die "redis-server did not start";
    wait_until(sub { -S "$dir/redis.sock" }, 5) or die "no redis socket";
}

sub redis_stop {
    open my $fh, '<', "$dir/redis.pid" or return;
    chomp(my $pid = <$fh>);
    kill 'TERM', $pid;
    wait_until(sub { !kill 0, $pid }, 5);
    unlink "$dir/redis.sock";
}

redis_start();
END { redis_stop() }

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(redis_start redis_stop);
}

run_tests();

__DATA__

=== TEST 1: a host name is refused by nginx -t: hiredis would resolve it with a blocking call
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_REDIS_DIR/fleet.state
                      key=$TEST_NGINX_REDIS_DIR/key
                      redis=localhost:6379;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "redis=localhost:6379": "unix:\/path" or an IP address and a port are expected .* in .*nginx\.conf:\d+/



=== TEST 2: a password file others may read is refused
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_REDIS_DIR/fleet.state
                      key=$TEST_NGINX_REDIS_DIR/key
                      redis=unix:$TEST_NGINX_REDIS_DIR/redis.sock
                      redis_password_file=$TEST_NGINX_REDIS_DIR/password-open;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*password-open.* (group|others)/



=== TEST 3: each worker connects and authenticates; an outage is said once per worker, and its end
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_REDIS_DIR/fleet.state
                      key=$TEST_NGINX_REDIS_DIR/key
                      redis=unix:$TEST_NGINX_REDIS_DIR/redis.sock
                      redis_password_file=$TEST_NGINX_REDIS_DIR/password
                      redis_db=2;
--- config
    location = /t { return 204; }
--- init
ok(wait_until(sub { (() = join('', error_log_since(0))
                        =~ /connected to redis/g) >= 2 }, 10),
   'both workers connected');
my $log0 = error_log_size();
redis_stop();
ok(wait_until(sub { (() = join('', error_log_since($log0))
                        =~ /connection to redis .* was lost/g) >= 2 }, 10),
   'both lost it');
# a few attempts meanwhile: said once, then at info
select undef, undef, undef, 1.5;
redis_start();
ok(wait_until(sub { (() = join('', error_log_since($log0))
                        =~ /connected to redis/g) >= 2 }, 15),
   'both connected again');
my @err = grep { /\[error\].*cannot connect to redis/ } error_log_since($log0);
cmp_ok(scalar @err, '<=', 2, 'the failed attempts were said at most once per worker');
--- request
GET /t
--- error_code: 204
--- no_error_log
[crit]
[alert]
--- error_log_level: info



=== TEST 4: a wrong password is said clearly
--- http_config
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_REDIS_DIR/fleet.state
                      key=$TEST_NGINX_REDIS_DIR/key
                      redis=unix:$TEST_NGINX_REDIS_DIR/redis.sock
                      redis_password_file=$TEST_NGINX_REDIS_DIR/password-wrong;
--- config
    location = /t { return 204; }
--- init
ok(wait_until(sub { join('', error_log_since(0)) =~ /redis .* refused AUTH/ }, 10),
   'refused AUTH, in the error log');
# the attempts go on, 100 ms, 200, 400...: said once per worker, then at info
ok(wait_until(sub { (() = join('', error_log_since(0)) =~ /refused AUTH/g) >= 8 }, 10),
   'tried again and again');
my @err = grep { /\[error\]/ && /redis/ } error_log_since(0);
cmp_ok(scalar @err, '<=', 2, 'an error line per worker, not per attempt');
--- request
GET /t
--- error_code: 204
--- error_log_level: info



=== TEST 5: the status page counts the workers connected, not the cache manager and loader, and a worker killed with kill -9 is replaced in its count
--- http_config
    proxy_cache_path $TEST_NGINX_REDIS_DIR/cache keys_zone=c:1m;
    tokenrefresh_zone fleet:1m state=$TEST_NGINX_REDIS_DIR/fleet.state
                      key=$TEST_NGINX_REDIS_DIR/key
                      redis=unix:$TEST_NGINX_REDIS_DIR/redis.sock
                      redis_password_file=$TEST_NGINX_REDIS_DIR/password;
--- config
    location = /status { tokenrefresh_status; }
--- init
my $workers = sub {
    my $r = hit(GET => '/status');
    return ($r->{content} // '') =~ /"connected_workers": (\d+)/ ? $1 : -1;
};
ok(wait_until(sub { $workers->() == 2 }, 10), 'two workers connected');
is(scalar(() = join('', error_log_since(0)) =~ /connected to redis/g), 2,
   'and nothing else: no cache process connects');
# a worker, not the cache manager: its title says so
my ($victim) = grep { open my $fh, '<', "/proc/$_/cmdline";
                      (<$fh> // '') =~ /worker process/ } worker_pids();
kill 'KILL', $victim;
ok(wait_until(sub { !kill 0, $victim }, 10), 'a worker killed');
ok(wait_until(sub { (() = join('', error_log_since(0)) =~ /connected to redis/g) >= 3 }, 10),
   'the new one connected');
is($workers->(), 2, 'still two connected, not three');
--- request
GET /t
--- error_code: 404
