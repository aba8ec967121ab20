// BoundedQueue: bounded (a full queue refuses and counts), FIFO order, a consumer that wakes on
// the first push, and close() handing over what is still queued. Threads synchronise by join
// and by the queue itself, never by sleeping.
#include "common/bounded_queue.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace gw {
namespace {

using namespace std::chrono_literals;

// Proves: a full queue refuses further pushes without blocking and counts each one.
TEST(BoundedQueue, RefusesAndCountsWhenFull) {
  BoundedQueue<int> q(3);
  EXPECT_TRUE(q.try_push(1));
  EXPECT_TRUE(q.try_push(2));
  EXPECT_TRUE(q.try_push(3));
  EXPECT_FALSE(q.try_push(4));
  EXPECT_FALSE(q.try_push(5));
  EXPECT_EQ(q.size(), 3u);
  EXPECT_EQ(q.dropped(), 2u);
  EXPECT_EQ(q.pushed(), 3u);
  std::vector<int> out;
  ASSERT_TRUE(q.pop_all(out));
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(q.try_push(6));  // room again once drained
  EXPECT_EQ(q.dropped(), 2u);
}

// Proves: items come out oldest first and pop_all appends after what `out` already holds.
TEST(BoundedQueue, KeepsOrderAcrossBatches) {
  BoundedQueue<std::string> q(10);
  q.try_push("a");
  q.try_push("b");
  std::vector<std::string> out{"x"};
  ASSERT_TRUE(q.pop_all(out));
  q.try_push("c");
  ASSERT_TRUE(q.pop_all(out));
  EXPECT_EQ(out, (std::vector<std::string>{"x", "a", "b", "c"}));
}

// Proves: a zero capacity still holds one item (a queue that refuses everything is no queue).
TEST(BoundedQueue, CapacityIsAtLeastOne) {
  BoundedQueue<int> q(0);
  EXPECT_EQ(q.capacity(), 1u);
  EXPECT_TRUE(q.try_push(1));
  EXPECT_FALSE(q.try_push(2));
}

// Proves: close() keeps what is queued for the consumer, which gets it all and then `false`;
// pushes after close are refused and counted as dropped.
TEST(BoundedQueue, CloseHandsOverWhatIsQueuedThenStops) {
  BoundedQueue<int> q(10);
  q.try_push(1);
  q.try_push(2);
  q.close();
  EXPECT_FALSE(q.try_push(3));
  EXPECT_EQ(q.dropped(), 1u);
  std::vector<int> out;
  EXPECT_TRUE(q.pop_all(out));  // items queued before close are not lost
  EXPECT_EQ(out, (std::vector<int>{1, 2}));
  EXPECT_FALSE(q.pop_all(out));  // closed and empty: stop
  EXPECT_EQ(out.size(), 2u);
}

// Proves: a bounded wait on an empty queue returns with nothing (and true: not closed).
TEST(BoundedQueue, TimedWaitReturnsEmptyHanded) {
  BoundedQueue<int> q(4);
  std::vector<int> out;
  EXPECT_TRUE(q.pop_all(out, 0ms));
  EXPECT_TRUE(out.empty());
}

// Proves: a consumer blocked on an empty queue wakes for pushes from several producers and for
// close(), and receives every accepted item exactly once, each producer's items in its order.
TEST(BoundedQueue, ConsumerThreadReceivesEverythingInProducerOrder) {
  constexpr int kProducers = 4;
  constexpr int kEach = 2000;
  BoundedQueue<int> q(kProducers * kEach);  // big enough that nothing is dropped
  std::vector<int> got;
  std::thread consumer([&] {
    while (q.pop_all(got)) {
    }
  });
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&q, p] {
      for (int i = 0; i < kEach; ++i) {
        q.try_push(p * kEach + i);
      }
    });
  }
  for (auto& t : producers) {
    t.join();
  }
  q.close();
  consumer.join();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kProducers * kEach));
  EXPECT_EQ(q.dropped(), 0u);
  std::vector<int> last(kProducers, -1);
  for (const int v : got) {
    const int p = v / kEach;
    EXPECT_GT(v, last[p]) << "producer " << p << " out of order";
    last[p] = v;
  }
}

}  // namespace
}  // namespace gw
