#!/usr/bin/perl
# Prints the results of bench/bench.pl (build/bench/results.json) as the
# Markdown tables of docs/benchmarks.md, so that the document quotes the
# run and nothing else:
#
#   perl bench/report.pl [build/bench/results.json]
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use strict;
use warnings;
use JSON::PP;

my $file = shift // 'build/bench/results.json';

open my $fh, '<', $file or die "$file: $!\n";
my $r = decode_json(do { local $/; <$fh> });
close $fh;

my $s = $r->{steady};
my $i = $r->{instructions};
my $st = $r->{storm};

sub spread { sprintf '%.3f (%.3f .. %.3f)', @{$_[0]}{qw(median min max)} }
sub pct { sprintf '%+.1f %%', ($_[0] / $_[1] - 1) * 100 }

print "Run of $r->{date} on $r->{machine}.\n\n";

print "**Steady state** ($r->{steady_rounds} rounds of $r->{seconds} s; ",
      "requests per second and latency are medians over the rounds)\n\n";
print "| attach step | requests/s | p50 ms | p99 ms | ratio to fixed, ",
      "median (min .. max) | instructions per request |\n";
print "|---|---:|---:|---:|---|---:|\n";
printf "| fixed header (baseline) | %.0f | %.2f | %.2f | 1 | %.0f |\n",
       @{$s->{fix}}{qw(rps p50 p99)}, $i->{fix};
printf "| module | %.0f | %.2f | %.2f | %s | %.0f (%s) |\n",
       @{$s->{mod}}{qw(rps p50 p99)}, spread($s->{ratio}), $i->{mod},
       pct($i->{mod}, $i->{fix});
if ($r->{lua} && $s->{lua}) {
    printf "| Lua (OpenResty style) | %.0f | %.2f | %.2f | %s | %.0f (%s) |\n",
           @{$s->{lua}}{qw(rps p50 p99)}, spread($s->{ratio_lua}),
           $i->{lua}, pct($i->{lua}, $i->{fix});
}

printf "\nThe module's own functions (their self cost, without what they call): "
       . "%.0f instructions per request.\n", $i->{own} if defined $i->{own};

printf "\n**Storm** (%d rounds, %d clients at once, provider answering in "
       . "100 ms)\n\n", scalar @{$st->{token_calls}}, $st->{burst};
print "| | value |\n|---|---|\n";
printf "| token-endpoint calls per storm | %s |\n",
       join(' ', @{$st->{token_calls}});
printf "| requests served 200 per storm | %s |\n", join(' ', @{$st->{ok}});
printf "| valid token: p50 / p99 / max | %.0f / %.0f / %.0f ms |\n",
       @{$st->{valid}}{qw(p50 p99 max)};
printf "| revoked token (refresh, then replay): p50 / p99 / max "
       . "| %.0f / %.0f / %.0f ms |\n", @{$st->{revoked}}{qw(p50 p99 max)};
printf "| target for the revoked p99 (valid p99 + provider %.0f ms + "
       . "valid max) | %.0f ms |\n", $st->{provider_ms}, $st->{p99_bound};
printf "| wake-up in the other worker after the token is stored, "
       . "%d requests: p50 / p99 / max | %.0f / %.0f / %.0f ms |\n",
       @{$st->{wake_ms}}{qw(n p50 p99 max)};

printf "\n**Scaling** (%d rounds of %d s each, against a fixed header of "
       . "the same size)\n\n", $r->{rounds}, $r->{seconds};
print "| case | credentials | token bytes | module requests/s | ",
      "baseline requests/s | ratio, median (min .. max) | ",
      "zone bytes per credential |\n";
print "|---|---:|---:|---:|---:|---|---:|\n";
for my $name (qw(creds-1 creds-100 creds-10000 token-1k token-8k)) {
    my $c = $r->{scaling}{$name} or next;
    printf "| %s | %d | %d | %.0f | %.0f | %.3f (%.3f .. %.3f) | %s |\n",
           $name, @{$c}{qw(credentials token_bytes rps baseline_rps ratio
                           min max)},
           $c->{bytes_per_credential}
               ? sprintf('%.0f', $c->{bytes_per_credential}) : 'n/a';
}
