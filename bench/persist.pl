#!/usr/bin/perl
# How long persistence stalls a worker's event loop: users' sessions whose
# tokens live 2 seconds, requested by wrk flat out, so that about 1,000
# refreshes a second each write the state; meanwhile a probe on its own
# keep-alive connection asks the same worker (worker_processes 1) for a
# tiny answer every 2 ms and records how long each took.  Side by side in
# the same run:
#
#   none      no state file (the floor: what the load alone costs)
#   journal   this build: a frame per change, appended and synced in a
#             thread of the default pool
#   snapshot  the build of --base (default 09f948e, the last commit that
#             wrote the whole zone in the event loop per change), or
#             BENCH_BASE_SO; --base none leaves it out
#
# The token endpoint and the API are a second nginx (return directives),
# so that the provider is not the bottleneck.  Reports the refreshes per
# second reached, the probe's p50, p99, p99.9 and maximum, and the maximum
# over the rounds.  See docs/benchmarks.md.
#
# Usage: bench/persist.pl [--sessions N] [--seconds S] [--rounds R]
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use strict;
use warnings;

use FindBin qw($Bin);
use Getopt::Long;
use HTTP::Tiny;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use POSIX qw(strftime);

my $top = "$Bin/..";
my ($sessions, $seconds, $rounds, $out) = (2000, 6, 3, "$top/build/persist");
my $rev = '09f948e';
GetOptions('sessions=i' => \$sessions, 'seconds=f' => \$seconds,
           'rounds=i' => \$rounds, 'out=s' => \$out, 'base=s' => \$rev)
    or die "usage\n";

my $so = $ENV{BENCH_SO} // "$top/build/ngx_http_tokenrefresh_module.so";
my $base = $ENV{BENCH_BASE_SO};

# the baseline, built from git once and kept
if (!$base && $rev ne 'none') {
    my $bdir = "$top/build/base-$rev";
    if (!-f "$bdir/build/ngx_http_tokenrefresh_module.so") {
        system("rm -rf $bdir && mkdir -p $bdir"
               . " && git -C $top archive $rev | tar -x -C $bdir"
               . " && $bdir/scripts/build.sh $bdir/build > $bdir.log 2>&1") == 0
            or die "could not build $rev (see $bdir.log)\n";
    }
    $base = "$bdir/build/ngx_http_tokenrefresh_module.so";
}
my $nginx = $ENV{NGINX} // '/usr/sbin/nginx';
my %port = (front => 18280, up => 18281);
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 1);

system("rm -rf $out && mkdir -p $out/up/logs") == 0 or die "mkdir $out";

my @pids;
$SIG{INT} = $SIG{TERM} = sub { cleanup(); exit 1 };
END { cleanup() }

sub cleanup {
    for my $pf (glob("$out/*/logs/nginx.pid")) {
        open my $fh, '<', $pf or next;
        my $pid = <$fh>;
        kill 'QUIT', $pid if $pid;
    }
}

sub write_file {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh;
}

sub start {
    my ($dir) = @_;
    system("$nginx -p $dir -c $dir/nginx.conf -e $dir/logs/error.log") == 0
        or die "nginx in $dir did not start";
}

sub stop {
    my ($dir) = @_;
    my $pf = "$dir/logs/nginx.pid";
    open my $fh, '<', $pf or return;
    my $pid = <$fh>;
    chomp $pid;
    kill 'QUIT', $pid;
    my $t0 = time;
    while (kill 0, $pid) {
        die "nginx $pid did not stop" if time - $t0 > 30;
        sleep 0.05;
    }
}

sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[int($p * $#v)];
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return $v[$#v / 2];
}

# the provider and the API: tokens of 2 seconds, never the bottleneck
write_file("$out/up/nginx.conf", <<"EOC");
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    log_format one "r";
    server {
        listen 127.0.0.1:$port{up};
        keepalive_requests 100000;
        location = /login {
            default_type application/json;
            return 200 '{"token":"at-\$request_id","refreshToken":"rt-\$request_id","expiresIn":2}';
        }
        location = /refresh {
            access_log logs/refresh.log one;
            default_type application/json;
            return 200 '{"token":"at-\$request_id","refreshToken":"rt-\$request_id","expiresIn":2}';
        }
        location / {
            return 200 "ok\\n";
        }
    }
}
EOC
start("$out/up");
$http->get("http://127.0.0.1:$port{up}/")->{status} == 200
    or die "the provider does not answer";

write_file("$out/key", join('', map { sprintf '%02x', int rand 256 } 1 .. 32)
                       . "\n");
chmod 0600, "$out/key";

sub front_conf {
    my ($v, $module) = @_;
    my $state = $v eq 'none' ? ''
              : "state=$out/$v/users.state key=$out/key";
    return <<"EOC";
load_module $module;
worker_processes 1;
error_log logs/error.log notice;
pid logs/nginx.pid;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up {
        server 127.0.0.1:$port{up};
        keepalive 64;
    }
    tokenrefresh_zone users:64m $state;
    server {
        listen 127.0.0.1:$port{front};
        keepalive_requests 1000000;
        tokenrefresh_session_header X-Session;
        tokenrefresh_json_access_token /token;
        tokenrefresh_json_refresh_token /refreshToken;
        tokenrefresh_json_expires_in /expiresIn;
        tokenrefresh_ahead 1s;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location = /ping {
            return 204;
        }
        location = /login {
            tokenrefresh_session_login users;
            tokenrefresh_session_handle_json session;
            proxy_set_header Accept-Encoding "";
            proxy_pass http://up/login;
        }
        location = /_refresh {
            internal;
            proxy_set_body "refresh_token=\$tokenrefresh_refresh_token_form";
            proxy_pass http://up/refresh;
        }
        location /api/ {
            tokenrefresh_session users;
            tokenrefresh_refresh /_refresh;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://up;
        }
    }
}
EOC
}

# the probe: one keep-alive connection, a request every 2 ms, the latency
# of each (ms); run in a child, results in a file
sub probe {
    my ($file, $secs) = @_;
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port{front}")
        or die "probe: $!";
    my @lat;
    my $end = time + $secs;
    while (time < $end) {
        my $t0 = time;
        print $s "GET /ping HTTP/1.1\r\nHost: b\r\n\r\n";
        my $buf = '';
        while ($buf !~ /\r\n\r\n/) {
            my $n = sysread($s, $buf, 4096, length $buf);
            die "probe: connection closed" unless $n;
        }
        die "probe: $buf" unless $buf =~ m{^HTTP/1.1 204};
        push @lat, (time - $t0) * 1000;
        my $left = 0.002 - (time - $t0);
        sleep $left if $left > 0;
    }
    write_file($file, join("\n", @lat) . "\n");
    POSIX::_exit(0);    # not END: that stops the servers
}

sub variant {
    my ($v, $module, $round) = @_;
    my $dir = "$out/$v";
    system("rm -rf $dir && mkdir -p $dir/logs") == 0 or die;
    # the workers write the state: as root, nginx runs them as nobody
    system("chown nobody $dir") == 0 or die if $> == 0;
    write_file("$dir/nginx.conf", front_conf($v, $module));
    start($dir);

    # the users log in, on one keep-alive connection, each request in one
    # write (a body written apart from its header waits for a delayed ACK)
    my @handles;
    my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port{front}")
        or die "login: $!";
    for my $i (1 .. $sessions) {
        my $body = "{\"email\":\"u$i\"}";
        print $c "POST /login HTTP/1.1\r\nHost: b\r\n"
                 . "Content-Type: application/json\r\n"
                 . "Content-Length: " . length($body) . "\r\n\r\n$body";
        my $buf = '';
        until ($buf =~ /\r\n\r\n/ && $buf =~ /Content-Length: (\d+)/i
               && length($buf) >= index($buf, "\r\n\r\n") + 4 + $1)
        {
            sysread($c, $buf, 65536, length $buf) or die "login: closed";
        }
        die "login: $buf" unless $buf =~ m{^HTTP/1.1 200};
        my ($h) = $buf =~ /"session":"([^"]+)"/ or die "no handle: $buf";
        push @handles, $h;
    }
    close $c;
    write_file("$dir/handles.lua",
               "handles = {" . join(',', map { "\"$_\"" } @handles) . "}\n"
               . <<'EOL');
local i = 0
request = function()
    i = i % #handles + 1
    return wrk.format("GET", "/api/x", { ["X-Session"] = handles[i] })
end
EOL

    my $up0 = up_requests();
    my $probe = probe("$dir/probe.txt", $seconds);
    my $o = `wrk -t1 -c32 -d${seconds}s -s $dir/handles.lua http://127.0.0.1:$port{front}/ 2>&1`;
    waitpid $probe, 0;
    die "probe failed" if $?;
    my ($rps) = $o =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk: $o";
    die "wrk: non-2xx answers\n$o" if $o =~ /Non-2xx/;
    my $refreshes = (up_requests() - $up0) / $seconds;

    open my $fh, '<', "$dir/probe.txt" or die;
    my @lat = map { chomp; $_ } <$fh>;
    close $fh;
    my $log = do { local $/; open my $l, '<', "$dir/logs/error.log"; <$l> // '' };
    stop($dir);
    die "$v: errors in the log:\n$log" if $log =~ /\[(error|crit|alert)\]/;

    return { rps => $rps, refreshes => $refreshes, n => scalar @lat,
             p50 => pct(0.5, @lat), p99 => pct(0.99, @lat),
             p999 => pct(0.999, @lat), max => pct(1, @lat),
             frames => -s "$dir/users.state.journal" };
}

# the refreshes the provider answered: a line of two bytes each
sub up_requests { return (-s "$out/up/logs/refresh.log" // 0) / 2 }

my @variants = (['none', $so], ['journal', $so]);
push @variants, ['snapshot', $base] if $base;

my %res;
for my $round (1 .. $rounds) {
    for my $v (@variants) {
        push @{ $res{$v->[0]} }, variant(@$v, $round);
    }
}

printf "persistence stall, %d sessions, tokens of 2 s, %d rounds of %g s, "
       . "%s\n", $sessions, $rounds, $seconds,
       strftime('%Y-%m-%d %H:%M', localtime);
printf "%-9s %9s %10s %8s %8s %8s %8s %9s\n", 'variant', 'req/s',
       'refresh/s', 'p50 ms', 'p99 ms', 'p99.9', 'max ms', 'worst max';
for my $v (@variants) {
    my $r = $res{$v->[0]};
    printf "%-9s %9.0f %10.0f %8.2f %8.2f %8.2f %8.2f %9.2f\n", $v->[0],
           median(map { $_->{rps} } @$r),
           median(map { $_->{refreshes} } @$r),
           median(map { $_->{p50} } @$r),
           median(map { $_->{p99} } @$r), median(map { $_->{p999} } @$r),
           median(map { $_->{max} } @$r),
           (sort { $b <=> $a } map { $_->{max} } @$r)[0];
}
