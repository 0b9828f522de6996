# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

package TokenRefresh::Client;

# An HTTP/1.1 client for storms: every connection is opened first, then
# every request sent at (nearly) the same moment, then every answer read.
# Plain Perl, used by the test suite (t/TokenRefresh.pm) and the
# benchmarks (bench/).

use strict;
use warnings;

use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use Errno qw(EINPROGRESS EAGAIN EWOULDBLOCK EINTR);
use Socket qw(inet_aton pack_sockaddr_in);
use Time::HiRes qw(time);
use Exporter qw(import);

our @EXPORT_OK = qw(storm parse_response);

# Opens all connections first, then sends every request at (nearly) the
# same moment, then reads every answer.  Each request is a hash with
# method, uri, optional body, headers and port (another nginx's).
# Returns, in order, hashes with status, headers (lower-case names), body
# and the time it took.
sub storm {
    my (%o) = @_;
    my $reqs = $o{requests};
    my $port = $o{port} or die "storm: no port";
    my $timeout = $o{timeout} // 30;
    my $addr = pack_sockaddr_in($port, inet_aton('127.0.0.1'));
    my $poll = IO::Poll->new;
    my @c;

    for my $i (0 .. $#$reqs) {
        socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0)
            or die "socket: $!";
        $s->blocking(0);
        my $r = $reqs->[$i];
        my $to = $r->{port}
                 ? pack_sockaddr_in($r->{port}, inet_aton('127.0.0.1'))
                 : $addr;
        connect($s, $to) or $! == EINPROGRESS or die "connect: $!";
        my $body = $r->{body} // '';
        my $out = "$r->{method} $r->{uri} HTTP/1.1\r\nHost: localhost\r\n"
                . "Connection: close\r\n";
        $out .= "$_: $r->{headers}{$_}\r\n" for keys %{ $r->{headers} // {} };
        $out .= "Content-Length: " . length($body) . "\r\n"
            if length $body || $r->{method} eq 'POST';
        $out .= "\r\n$body";
        push @c, { sock => $s, out => $out, in => '', i => $i };
        $poll->mask($s => POLLOUT);
    }

    # wait until every connection is established
    my $deadline = time + $timeout;
    my %pending = map { $_ => 1 } 0 .. $#c;
    while (%pending && time < $deadline) {
        $poll->poll(0.5);
        for my $k (keys %pending) {
            delete $pending{$k} if $poll->events($c[$k]{sock}) & POLLOUT;
        }
    }
    die "storm: " . scalar(keys %pending) . " connections not established"
        if %pending;

    # now send them all
    my $t0 = time;
    for my $c (@c) {
        $c->{start} = time;
        my $w = syswrite($c->{sock}, $c->{out});
        substr($c->{out}, 0, $w // 0, '');
        $poll->mask($c->{sock} => length $c->{out} ? POLLOUT : POLLIN);
    }

    my $open = @c;
    while ($open && time < $deadline) {
        $poll->poll(0.5);
        for my $c (@c) {
            next if $c->{done};
            my $ev = $poll->events($c->{sock}) or next;
            if (($ev & POLLOUT) && length $c->{out}) {
                my $w = syswrite($c->{sock}, $c->{out});
                substr($c->{out}, 0, $w // 0, '');
                $poll->mask($c->{sock} => POLLIN) unless length $c->{out};
                next;
            }
            my $n = sysread($c->{sock}, my $buf, 65536);
            next if !defined $n && ($! == EAGAIN || $! == EINTR);
            if ($n) {
                $c->{in} .= $buf;
                next;
            }
            $c->{done} = 1;
            $c->{elapsed} = time - $c->{start};
            $poll->remove($c->{sock});
            close $c->{sock};
            $open--;
        }
    }

    my @res;
    for my $c (@c) {
        my $r = parse_response($c->{in});
        $r->{elapsed} = $c->{elapsed} // -1;
        $r->{timed_out} = !$c->{done};
        push @res, $r;
        close $c->{sock} unless $c->{done};
    }

    return @res;
}

sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw // '', 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %h;
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    $body //= '';
    if (($h{'transfer-encoding'} // '') =~ /chunked/) {
        my $d = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $d .= substr($body, 0, $len, '');
            $body =~ s/^\r\n//;
        }
        $body = $d;
    }
    return { status => $status // 0, headers => \%h, body => $body };
}

1;
