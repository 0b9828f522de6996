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
--- request
GET /t
--- error_code: 204
