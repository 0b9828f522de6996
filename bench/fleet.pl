#!/usr/bin/perl
# The fleet's benchmarks (docs/benchmarks.md, "A fleet"), each beside its
# baseline in the same run:
#
#   1. instructions per request under callgrind, and throughput, for a
#      credential in a zone backed by redis against the same credential in
#      a zone without it: the steady state must not touch redis;
#   2. a storm over three nodes (two workers each): a revoked token, 600
#      requests spread over the nodes, in rounds: token calls, latency,
#      and how long after the refreshing node's answers those of the other
#      nodes come (the token stored, announced, taken, the requests
#      replayed);
#   3. one request per node after a revocation, many rounds: how much
#      later than the refreshing node's the other nodes' answers come.
#
# Usage: bench/fleet.pl [--rounds N] [--seconds S] [--storm-rounds N]
#                       [--resume-rounds N] [--only steady|storm|resume]
#                       [--out DIR]
#
# BENCH_PORT=P: nodes on P, P+1 and P+2, the upstream on P+3, the mock
# provider on P+4 and P+5, redis on P+6, nginx under callgrind on P+10.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use strict;
use warnings;

use FindBin qw($Bin);
use lib "$Bin/../t/lib";
use TokenRefresh::Client qw(storm);
use Getopt::Long;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;

my $top = "$Bin/..";
my ($rounds, $seconds, $storm_rounds, $out) = (11, 2, 7, "$top/build/bench-fleet");
my ($resume_rounds, $only) = (40, '');
GetOptions('rounds=i' => \$rounds, 'seconds=f' => \$seconds,
           'storm-rounds=i' => \$storm_rounds,
           'resume-rounds=i' => \$resume_rounds, 'out=s' => \$out,
           'only=s' => \$only)
    or die "usage\n";

my $so = $ENV{BENCH_SO} // "$top/build/ngx_http_tokenrefresh_module.so";
my $nginx = $ENV{NGINX} // '/usr/sbin/nginx';
my $p = $ENV{BENCH_PORT} // 18280;
my %port = (node1 => $p, node2 => $p + 1, node3 => $p + 2, up => $p + 3,
            idp => $p + 4, api => $p + 5, redis => $p + 6, cg => $p + 10);

my $http = HTTP::Tiny->new(timeout => 30);
my $json = JSON::PP->new->canonical->pretty;
my (%result, @pids);

sub say { print @_, "\n"; }

sub median {
    my @v = sort { $a <=> $b } @_;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub pct {
    my ($q, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[int($q / 100 * $#v + 0.5)];
}

sub write_file {
    my ($file, $text, $mode) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    chmod $mode, $file if $mode;
}

sub mock {
    my ($path, $data) = @_;
    my $r = $http->request('POST', "http://127.0.0.1:$port{idp}/_mock/$path",
                           { content => encode_json($data // {}) });
    die "mock $path: $r->{status}" unless $r->{success};
    return $r->{content};
}

sub calls {
    chomp(my $c = $http->get("http://127.0.0.1:$port{idp}/_mock/calls")
                       ->{content});
    return $c;
}

sub wait_for {
    my ($port) = @_;
    my $t0 = time;
    until (IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")) {
        die "nothing listens on $port" if time - $t0 > 30;
        sleep 0.05;
    }
}

sub stop_all {
    for my $pidfile (glob "$out/*/logs/nginx.pid") {
        open my $fh, '<', $pidfile or next;
        chomp(my $pid = <$fh> // '');
        kill 'QUIT', $pid if $pid;
        unlink $pidfile;
    }
    system("redis-cli -p $port{redis} shutdown nosave > /dev/null 2>&1");
    kill 'TERM', @pids if @pids;
    @pids = ();
}

$SIG{INT} = $SIG{TERM} = sub { stop_all(); exit 1 };
END { my $rc = $?; stop_all(); $? = $rc }

system("rm -rf $out && mkdir -p $out/up/logs") == 0 or die "mkdir $out";
write_file("$out/key", join('', map { sprintf '%02x', int rand 256 } 1 .. 32)
                       . "\n", 0600);

# the upstream answers at once; the mock provider and API; redis
write_file("$out/up/nginx.conf", <<"EOF");
worker_processes 1;
error_log $out/up/logs/error.log warn;
pid $out/up/logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$port{up} reuseport backlog=4096;
        keepalive_requests 100000;
        location / { return 200 "ok\\n"; }
    }
}
EOF
system($nginx, '-p', "$out/up", '-c', "$out/up/nginx.conf") == 0 or die;

my $mock = fork // die;
if ($mock == 0) {
    exec $^X, "$top/t/lib/mock_server.pl", '--idp-port', $port{idp},
         '--api-port', $port{api};
}
push @pids, $mock;

system('redis-server', '--port', $port{redis}, '--bind', '127.0.0.1',
       '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
       '--logfile', "$out/redis.log") == 0 or die "redis-server";
wait_for($_) for @port{qw(up idp redis)};

# a node: the same configuration, its own port and state file
sub node_conf {
    my ($n, $dir, $workers) = @_;
    # as root, workers as root too: they write the state files here
    my $user = $> == 0 ? 'user root;' : '';
    return <<"EOF";
load_module $so;
$user
worker_processes $workers;
worker_rlimit_nofile 20000;
error_log $dir/logs/error.log warn;
pid $dir/logs/nginx.pid;
events { worker_connections 8192; }

http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;

    tokenrefresh_zone local:1m;
    tokenrefresh_zone fleet:1m state=$dir/fleet.state key=$out/key
                               redis=127.0.0.1:$port{redis};
    tokenrefresh_seed fleet bench $out/seed;

    upstream up  { server 127.0.0.1:$port{up}; keepalive 64; }
    upstream idp { server 127.0.0.1:$port{idp}; }
    upstream api { server 127.0.0.1:$port{api}; keepalive 64; }

    server {
        listen 127.0.0.1:$port{$n} reuseport backlog=4096;
        keepalive_requests 100000;

        location = /_login {
            internal;
            proxy_set_body "grant_type=client_credentials&client_id=bench";
            proxy_pass http://idp/token;
        }

        location = /_refresh {
            internal;
            proxy_set_body "grant_type=refresh_token&refresh_token=\$tokenrefresh_refresh_token_form";
            proxy_pass http://idp/token;
        }

        # the same credential, with and without the fleet
        location /mod/ {
            tokenrefresh local bench;
            tokenrefresh_login /_login;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://up;
        }

        location /flt/ {
            tokenrefresh fleet bench;
            tokenrefresh_refresh /_refresh;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://up;
        }

        # the storm goes to the mock API, which knows revoked tokens; a
        # revocation a round: the loop guard's ration refills at once
        location /api/ {
            tokenrefresh fleet bench;
            tokenrefresh_refresh /_refresh;
            tokenrefresh_backoff 1ms 20ms;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://api;
        }

        location = /status { tokenrefresh_status; }
    }
}
EOF
}

sub node_start {
    my ($n) = @_;
    my $dir = "$out/$n";
    system("mkdir -p $dir/logs") == 0 or die;
    write_file("$dir/nginx.conf", node_conf($n, $dir, 2));
    system($nginx, '-p', $dir, '-c', "$dir/nginx.conf") == 0
        or die "$n did not start";
    wait_for($port{$n});
}

sub get {
    my ($n, $path) = @_;
    my $r = $http->get("http://127.0.0.1:$port{$n}$path");
    die "GET $path on $n: $r->{status}" unless $r->{status} == 200;
    return $r;
}

mock('config', { rotate => 1 });
my $seed = decode_json(mock('grant', { cred => 'bench' }))->{refresh_token};
write_file("$out/seed", "$seed\n", 0600);

node_start($_) for qw(node1 node2 node3);

get($_, '/mod/warm'), get($_, '/flt/warm') for qw(node1 node2 node3);

# --- 1. the steady state: instructions, then throughput -------------------

goto STORM if $only && $only ne 'steady';

say "== fleet, steady state: a zone backed by redis against one without";

sub wrk {
    my ($url, $secs) = @_;
    my $o = `wrk -t1 -c32 -d${\($secs // $seconds)}s --latency $url 2>&1`;
    my ($rps) = $o =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk: $o";
    die "wrk: non-2xx answers from $url\n"
        if $o =~ /Non-2xx or 3xx responses: [1-9]/;
    return $rps;
}

if (system('which valgrind > /dev/null 2>&1') == 0) {
    my $dir = "$out/cg";
    system("mkdir -p $dir/logs") == 0 or die;
    my $conf = node_conf('cg', $dir, 1);
    $conf =~ s/^worker_processes 1;/worker_processes 1;\nmaster_process off;\ndaemon off;/m;
    write_file("$dir/nginx.conf", $conf);

    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>', "$dir/valgrind.log";
        open STDERR, '>&', \*STDOUT;
        exec 'valgrind', '--tool=callgrind', "--callgrind-out-file=$dir/cg.out",
             $nginx, '-p', $dir, '-c', "$dir/nginx.conf";
    }
    wait_for($port{cg});

    my %ir;
    for my $v (('mod', 'flt') x 5) {
        system("wrk -t1 -c4 -d1s http://127.0.0.1:$port{cg}/$v/warm > /dev/null");
        system("callgrind_control -z $pid > /dev/null 2>&1") == 0 or die;
        my $o = `wrk -t1 -c1 -d3s http://127.0.0.1:$port{cg}/$v/x`;
        my ($n) = $o =~ /(\d+) requests in/ or die "wrk: $o";
        system("callgrind_control -d $pid > /dev/null 2>&1") == 0 or die;
        my ($dump) = sort { -M $a <=> -M $b } glob "$dir/cg.out.*";
        my $text = do { local (@ARGV, $/) = $dump; <> };
        my ($total) = $text =~ /^summary: (\d+)/m or die "no summary";
        unlink $dump;
        push @{ $ir{$v} }, $total / $n;
    }
    kill 'TERM', $pid;
    waitpid $pid, 0;

    my ($mod, $flt) = (median(@{ $ir{mod} }), median(@{ $ir{flt} }));
    $result{instructions} = { local => $mod, fleet => $flt,
                              ratio => $flt / $mod };
    printf "  instructions per request: without redis %.0f, with %.0f "
           . "(%+.2f%%)\n", $mod, $flt, ($flt / $mod - 1) * 100;
}

my @ratio;
for my $round (1 .. $rounds) {
    my @order = $round % 2 ? ('mod', 'flt') : ('flt', 'mod');
    my %r = map { $_ => wrk("http://127.0.0.1:$port{node1}/$_/x") } @order;
    push @ratio, $r{flt} / $r{mod};
    printf "  round %d: without %.0f rps, with %.0f rps (%.3f)\n", $round,
           $r{mod}, $r{flt}, $ratio[-1];
}
$result{throughput_ratio} = { median => median(@ratio),
                              min => (sort @ratio)[0],
                              max => (sort @ratio)[-1] };
printf "  with redis / without: median %.3f (%.3f .. %.3f)\n",
       median(@ratio), (sort @ratio)[0], (sort @ratio)[-1];

# --- 2. a storm over three nodes -----------------------------------------------

STORM:
goto RESUME if $only && $only ne 'storm';

say "== fleet storm: a revoked token, 600 requests over three nodes, "
    . "$storm_rounds rounds";

my (@lat, @behind, @calls);
mock('config', { rotate => 1, delay_ms => 200 });

for my $round (1 .. $storm_rounds) {
    my $before = calls();
    my %leases = map { $_ => decode_json(get($_, '/status')->{content})
                                 ->{zones}{fleet}{fleet}{leases} }
                 qw(node1 node2 node3);
    mock('revoke');
    my @req = map { { method => 'GET', uri => "/api/r$round-$_",
                      port => $port{ 'node' . (1 + $_ % 3) } } } 1 .. 600;
    my @res = storm(port => $port{node1}, requests => \@req, timeout => 60);
    my $ok = grep { $_->{status} == 200 } @res;
    die "storm: $ok of 600 answers were 200\n" unless $ok == 600;

    my ($n) = calls() =~ /refresh_token=(\d+)/;
    my ($n0) = $before =~ /refresh_token=(\d+)/;
    push @calls, $n - ($n0 // 0);

    # the node that refreshed: its lease count moved
    my ($leader) = grep {
        decode_json(get($_, '/status')->{content})->{zones}{fleet}{fleet}
            {leases} > $leases{$_}
    } qw(node1 node2 node3);
    die "storm: no node took the lease\n" unless $leader;

    my (@mine, @others);
    for my $i (0 .. $#res) {
        my $node = 'node' . (1 + ($i + 1) % 3);
        push @{ $node eq $leader ? \@mine : \@others }, $res[$i]{elapsed};
    }
    push @lat, map { $_->{elapsed} } @res;

    # how much later than the refreshing node's the others' answers came
    my $first = median(@mine);
    push @behind, map { $_ - $first } @others;

    printf "  round %d: %d token call(s), p50 %.0f ms, p99 %.0f ms, "
           . "other nodes behind the refresher by p50 %.1f ms\n", $round,
           $calls[-1], pct(50, @lat) * 1000, pct(99, @lat) * 1000,
           median(map { $_ - $first } @others) * 1000;
}

$result{storm} = {
    token_calls => \@calls,
    p50_ms => pct(50, @lat) * 1000, p99_ms => pct(99, @lat) * 1000,
    behind_p50_ms => pct(50, @behind) * 1000,
    behind_p99_ms => pct(99, @behind) * 1000,
    provider_delay_ms => 200,
};
printf "  token calls per storm: %s; latency p50 %.0f ms, p99 %.0f ms "
       . "(the provider takes 200 ms)\n", join(' ', @calls),
       $result{storm}{p50_ms}, $result{storm}{p99_ms};
printf "  the other nodes' answers behind the refresher's: p50 %.1f ms, "
       . "p99 %.1f ms\n", $result{storm}{behind_p50_ms},
       $result{storm}{behind_p99_ms};

# --- 3. from a token stored on one node to a request resuming on another ------
#
# One request per node, sent at once after a revocation: one node
# refreshes (the provider takes 200 ms), the requests on the other two
# wait for it; how much later than the refresher's their answers come is
# the store, its announcement, the other node taking it, and the replay.

RESUME:
goto DONE if $only && $only ne 'resume';

say "== fleet: from a token stored on one node to a request resuming on "
    . "another, $resume_rounds rounds";

my @resume;
for my $round (1 .. $resume_rounds) {
    mock('revoke');
    my @res = storm(port => $port{node1}, timeout => 30,
                    requests => [ map { { method => 'GET',
                                          uri => "/api/w$round-$_",
                                          port => $port{"node$_"} } }
                                  1 .. 3 ]);
    die "resume: " . join(" ", map { "$_->{status} $_->{body}" } @res) . "\n"
        if grep { $_->{status} != 200 } @res;
    my @e = sort { $a <=> $b } map { $_->{elapsed} } @res;
    push @resume, map { $_ - $e[0] } @e[1, 2];
}

$result{resume} = { p50_ms => pct(50, @resume) * 1000,
                    p99_ms => pct(99, @resume) * 1000,
                    max_ms => pct(100, @resume) * 1000 };
printf "  another node's request answered after the refresher's: p50 %.1f "
       . "ms, p99 %.1f ms, max %.1f ms\n", $result{resume}{p50_ms},
       $result{resume}{p99_ms}, $result{resume}{max_ms};

DONE:
write_file("$out/fleet.json", $json->encode(\%result));
say "  results in $out/fleet.json";
