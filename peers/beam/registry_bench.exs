# The BEAM peer of the peers benchmark: Elixir's own answer to "one worker
# per id", a `Registry` with unique keys for the names and
# `DynamicSupervisor`s (one per scheduler, under a `PartitionSupervisor`,
# the way Elixir's docs scale a DynamicSupervisor) for the workers. Only
# what ships with Elixir and Erlang: no hex package.
#
#   elixir --erl "+P 20000000" peers/beam/registry_bench.exs [--n N] [--m M] [--churn C] [--pool P] [--scale] [--cap SECS]
#
# It runs the workload of shared/reference/peers.md and prints one JSON
# object per line on stdout, {"system", "metric", "value", "unit"}, with the
# metric ids and units of the Rust systems (peers/src/lib.rs); progress goes
# to stderr. The peers bench (peers/src/beam.rs) starts it as a child
# process like any other system. `--scale` runs the scale tier's subset
# (W1, W2, W3, W7, Wcall, W10, W8, Wshutdown) and skips W6, W9 and W11;
# `--cap` bounds the wait for the shutdown (then noted as timed out).

defmodule Bench.Worker do
  # Temporary: a worker that stopped is not restarted (like a stopped
  # gen_registry worker); its id is free again once the Registry has seen
  # it exit.
  use GenServer, restart: :temporary

  def start_link({id, state}) do
    GenServer.start_link(__MODULE__, state, name: {:via, Registry, {Bench.Reg, id}})
  end

  @impl true
  def init(state) do
    :counters.add(:persistent_term.get(:bench_inits), 1, 1)
    {:ok, state}
  end

  @impl true
  def handle_call({:ping, x}, _from, state), do: {:reply, x + state, state}
end

defmodule Bench do
  @system "elixir_registry"
  @offset 7
  @pool_base 10_000_000
  @race_id 20_000_000
  @racers 64

  def now, do: :erlang.monotonic_time(:nanosecond)

  def state_of(id), do: id + @offset

  def emit(metric, value, unit) do
    v =
      cond do
        value == nil -> "null"
        is_integer(value) -> Integer.to_string(value)
        true -> Float.to_string(value / 1)
      end

    IO.puts(~s({"system":"#{@system}","metric":"#{metric}","value":#{v},"unit":"#{unit}"}))
    progress("#{metric} = #{v} #{unit}")
  end

  def note(text) do
    IO.puts(~s({"system":"#{@system}","note":"#{String.replace(text, "\"", "'")}"}))
    progress("note: #{text}")
  end

  def progress(what) do
    t = (now() - :persistent_term.get(:bench_t0)) / 1.0e9
    IO.puts(:stderr, "  [#{:erlang.float_to_binary(t, decimals: 1)}s] #{@system} #{what}")
  end

  def rss do
    [_, resident | _] = File.read!("/proc/self/statm") |> String.split()
    String.to_integer(resident) * 4096
  end

  def peak_mib do
    File.read!("/proc/self/status")
    |> String.split("\n")
    |> Enum.find_value(0, fn line ->
      case String.split(line) do
        ["VmHWM:", kb, "kB"] -> String.to_integer(kb) / 1024
        _ -> nil
      end
    end)
  end

  def inits, do: :counters.get(:persistent_term.get(:bench_inits), 1)

  defp sup(id), do: {:via, PartitionSupervisor, {Bench.Sup, id}}

  def start(id), do: DynamicSupervisor.start_child(sup(id), {Bench.Worker, {id, state_of(id)}})

  def lookup(id) do
    case Registry.lookup(Bench.Reg, id) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  # Stops the worker of `id`: terminate_child returns once it exited.
  def stop(id) do
    case lookup(id) do
      nil -> false
      pid -> DynamicSupervisor.terminate_child(sup(id), pid) == :ok
    end
  end

  # A start right after a stop of the same id can find the name still taken
  # by the dead worker: the Registry drops an entry when its partition
  # handles the worker's exit, after terminate_child has returned. Counted.
  def start_fresh(id, tries \\ 0) do
    case start(id) do
      {:ok, pid} ->
        {pid, tries}

      {:error, {:already_started, _}} when tries < 100_000 ->
        :erlang.yield()
        start_fresh(id, tries + 1)

      _ ->
        {nil, tries}
    end
  end

  def lookup_or_start(id) do
    case lookup(id) do
      nil ->
        case start(id) do
          {:ok, pid} -> pid
          {:error, {:already_started, pid}} -> pid
          _ -> nil
        end

      pid ->
        pid
    end
  end

  # Two driver processes (one per scheduler), each over its own half of
  # `ids`, one operation after the other; returns {ns, failed}.
  def drive(ids, fun) do
    {a, b} = Enum.split(ids, div(length(ids) + 1, 2))
    t0 = now()

    failed =
      [a, b]
      |> Enum.map(fn part -> Task.async(fn -> Enum.count(part, &(not fun.(&1))) end) end)
      |> Enum.map(&Task.await(&1, :infinity))
      |> Enum.sum()

    {now() - t0, failed}
  end

  def wait_until(fun, deadline_ns) do
    cond do
      fun.() ->
        true

      now() > deadline_ns ->
        false

      true ->
        Process.sleep(1)
        wait_until(fun, deadline_ns)
    end
  end

  defp lookup_pass([], acc), do: acc
  defp lookup_pass([id | rest], acc), do: lookup_pass(rest, Registry.lookup(Bench.Reg, id) && acc + 1)

  # W3: lookups cycling through `order` for at least `budget_ns` → ns/op.
  def lookup_ns(order, budget_ns) do
    Enum.each(order, fn id -> lookup(id) || raise "lookup of #{id} missed" end)
    t0 = now()
    ops = lookup_loop(order, t0, budget_ns, 0)
    (now() - t0) / ops
  end

  defp lookup_loop(order, t0, budget_ns, ops) do
    ops = lookup_pass(order, ops)
    if now() - t0 < budget_ns, do: lookup_loop(order, t0, budget_ns, ops), else: ops
  end

  def percentile_us(sorted, count, p) do
    idx = max(min(ceil(p / 100 * count), count), 1) - 1
    Enum.at(sorted, idx) / 1000
  end

  def ping!(target, x, expect) do
    ^expect = GenServer.call(target, {:ping, x})
  end

  def churn(pool, cycles) do
    ids = Enum.map(0..(pool - 1), &(@pool_base + &1))
    {a, b} = Enum.split(ids, div(pool + 1, 2))
    halves = [List.to_tuple(a), List.to_tuple(b)]
    per_driver = div(cycles, 2)
    phase1 = div(per_driver, 10)

    phase = fn n, seed ->
      t0 = now()

      stats =
        halves
        |> Enum.with_index()
        |> Enum.map(fn {half, d} ->
          Task.async(fn ->
            :rand.seed(:exsss, {seed, d, 1})
            size = tuple_size(half)

            Enum.reduce(1..n//1, {0, 0, 0}, fn _, {cycles, errors, retries} ->
              id = elem(half, :rand.uniform(size) - 1)
              {pid, tries} = start_fresh(id)

              ok =
                pid != nil and GenServer.call(pid, {:ping, 3}) == 3 + state_of(id) and
                  DynamicSupervisor.terminate_child(sup(id), pid) == :ok

              {cycles + 1, if(ok, do: errors, else: errors + 1), retries + tries}
            end)
          end)
        end)
        |> Enum.map(&Task.await(&1, :infinity))
        |> Enum.reduce({0, 0, 0}, fn {c, e, r}, {c0, e0, r0} -> {c + c0, e + e0, r + r0} end)

      {stats, now() - t0}
    end

    progress("W9 churn")
    {{c1, e1, r1}, t1} = phase.(phase1, 91)
    mark = rss()
    {{c2, e2, r2}, t2} = phase.(per_driver - phase1, 191)
    growth = rss() - mark
    emit("W9", (c1 + c2) / ((t1 + t2) / 1.0e9), "cycles/s")
    emit("W9rss", growth / 1024, "KiB")
    emit("W9leak", growth / max(c2, 1), "B/cycle")
    emit("W9cycles", c1 + c2, "cycles")
    emit("errors", e1 + e2, "errors")

    if r1 + r2 > 0 do
      note(
        "W9: #{r1 + r2} starts found the id still registered to its stopped worker and were retried"
      )
    end
  end

  def race do
    progress("W11 race")
    before = inits()

    got =
      1..@racers
      |> Enum.map(fn _ -> Task.async(fn -> lookup_or_start(@race_id) != nil end) end)
      |> Enum.map(&Task.await(&1, :infinity))
      |> Enum.count(& &1)

    if got != @racers, do: note("W11: only #{got} of #{@racers} racers got a pid")
    emit("W11", inits() - before, "inits")
  end

  def run(opts) do
    n = opts[:n]
    m = min(opts[:m], n)
    scale = opts[:scale]
    :persistent_term.put(:bench_t0, now())
    :persistent_term.put(:bench_inits, :counters.new(1, [:write_concurrency]))
    schedulers = System.schedulers_online()

    {:ok, _} =
      Supervisor.start_link(
        [
          {Registry, keys: :unique, name: Bench.Reg, partitions: schedulers},
          {PartitionSupervisor,
           child_spec: DynamicSupervisor, name: Bench.Sup, partitions: schedulers}
        ],
        strategy: :one_for_one,
        name: Bench.Top
      )

    :rand.seed(:exsss, {5, 15, 0x1D})
    order = Enum.shuffle(0..(n - 1))
    ids = Enum.to_list(0..(n - 1))
    emit("N", n, "ids")

    # W1 + W2
    progress("W1 start")
    :erlang.garbage_collect()
    rss0 = rss()
    {t, failed} = drive(ids, fn id -> match?({:ok, _}, start(id)) end)
    if failed > 0, do: note("W1: #{failed} starts failed")
    emit("W1", n / (t / 1.0e9), "starts/s")
    emit("W2", (rss() - rss0) / n, "B/worker")

    # W3 (over at most 1,000,000 of the shuffled ids: cold all the same)
    progress("W3 lookup")
    emit("W3", lookup_ns(Enum.take(order, 1_000_000), 1_000_000_000), "ns/op")

    # W5: no lookup_or_start in Registry's API.
    emit("W5", nil, "ns/op")

    unless scale do
      progress("W6 call round trip")
      [first | _] = order
      pid = lookup(first)
      expect = state_of(first)
      Enum.each(0..999, fn x -> ping!(pid, x, x + expect) end)

      samples =
        Enum.map(0..(m - 1), fn x ->
          t0 = now()
          ping!(pid, x, x + expect)
          now() - t0
        end)
        |> Enum.sort()

      emit("W6p50", percentile_us(samples, m, 50), "µs")
      emit("W6p99", percentile_us(samples, m, 99), "µs")
    end

    # W7: lookup, then call the pid; Wcall: call through the via-name
    progress("W7 lookup + call, spread")
    calls = Enum.take(order, m)
    t0 = now()
    Enum.each(calls, fn id -> ping!(lookup(id), 1, 1 + state_of(id)) end)
    emit("W7", (now() - t0) / 1000 / m, "µs/op")
    progress("Wcall call by id")
    t0 = now()

    order
    |> Enum.reverse()
    |> Enum.take(m)
    |> Enum.each(fn id -> ping!({:via, Registry, {Bench.Reg, id}}, 1, 1 + state_of(id)) end)

    emit("Wcall", (now() - t0) / 1000 / m, "µs/op")

    # W10
    progress("W10 count / to_list")
    t0 = now()
    Enum.each(1..1000, fn _ -> Registry.count(Bench.Reg) end)
    emit("W10count", (now() - t0) / 1000, "ns")
    emit("W10reduce", nil, "ms")
    t0 = now()
    listed = Registry.select(Bench.Reg, [{{:"$1", :"$2", :_}, [], [{{:"$1", :"$2"}}]}])
    emit("W10list", (now() - t0) / 1.0e6, "ms")
    if length(listed) != n, do: note("W10: to_list had #{length(listed)} of #{n}")

    # W8: stop every worker; it ends once terminate_child returned for each
    # and the Registry has dropped every entry.
    progress("W8 stop all")
    t0 = now()
    {_, failed} = drive(ids, &stop/1)
    wait_until(fn -> Registry.count(Bench.Reg) == 0 end, now() + 60_000_000_000)
    emit("W8", n / ((now() - t0) / 1.0e9), "stops/s")
    emit("W8left", Registry.count(Bench.Reg), "entries")
    if failed > 0, do: note("W8: #{failed} stops failed")

    if scale do
      # Wshutdown: start the N workers again, then stop the supervisors
      # with all their workers (the whole tree but the Registry), until the
      # Registry is empty.
      progress("refill for Wshutdown")
      {t, _} = drive(ids, fn id -> match?({_, _}, start_fresh(id)) end)
      note("Wshutdown: the refill started #{n} workers at #{round(n / (t / 1.0e9))}/s")
      progress("Wshutdown")
      t0 = now()
      main = self()

      Task.start(fn ->
        :ok = Supervisor.terminate_child(Bench.Top, Bench.Sup)
        send(main, {:supervisors_down, now() - t0})
      end)

      cap = opts[:cap]

      if wait_until(fn -> Registry.count(Bench.Reg) == 0 end, t0 + cap * 1_000_000_000) do
        emit("Wshutdown", (now() - t0) / 1.0e9, "s")
      else
        note(
          "Wshutdown at N = #{n}: timed out after #{cap} s with #{Registry.count(Bench.Reg)} of #{n} workers left"
        )
      end

      receive do
        {:supervisors_down, t} ->
          note("Wshutdown at N = #{n}: the supervisors had stopped every worker after #{t / 1.0e9} s")
      after
        0 -> note("Wshutdown at N = #{n}: the supervisors were still stopping workers")
      end
    else
      churn(opts[:pool], opts[:churn])
      race()
    end

    emit("peakMiB", peak_mib(), "MiB")
  end
end

{opts, _, _} =
  OptionParser.parse(System.argv(),
    strict: [
      n: :integer,
      m: :integer,
      churn: :integer,
      pool: :integer,
      scale: :boolean,
      cap: :integer
    ]
  )

Bench.run(
  Keyword.merge(
    [n: 100_000, m: 100_000, churn: 1_000_000, pool: 10_000, scale: false, cap: 150],
    opts
  )
)

# Leave at once: the shutdown of a timed-out Wshutdown may still be running.
System.halt(0)
