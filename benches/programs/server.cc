// Server model: THREADS workers each parse requests into C++ objects
// (strings, vectors, a header map), build a response and hand it to the
// next worker, which frees it: every response is freed by a thread that did
// not allocate it, through C++ sized delete (`delete` of a complete type
// compiles to `operator delete(void*, size_t)`). Each worker also keeps a
// session cache of long-lived strings that requests replace at random.
// Inboxes are bounded (INBOX_MAX): a worker whose next inbox is full drains
// its own while it waits, so the memory in flight does not depend on how
// the scheduler happens to run the workers (unbounded, one descheduled
// worker let the others' responses pile up: 20-76 MiB peak RSS from run to
// run under one allocator). A worker that is done keeps draining its inbox
// until every worker is done, so that no one waits on it.
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace {

struct Request {
    std::string method;
    std::string path;
    std::vector<std::pair<std::string, std::string>> headers;
};

struct Response {
    int status;
    std::string body;
    std::vector<std::string> chunks;
};

struct Inbox {
    std::mutex lock;
    std::vector<Response *> items;
};

constexpr size_t INBOX_MAX = 256;

std::vector<Inbox> inboxes;
std::atomic<uint64_t> checksum{0};
std::atomic<int> finished{0};

std::string text(rng_t *r, size_t len)
{
    std::string s(len, 'a');
    for (size_t i = 0; i < len; i += 8)
        s[i] = char('a' + rng_next(r) % 26);
    return s;
}

uint64_t drain(Inbox &in)
{
    std::vector<Response *> got;
    {
        std::lock_guard<std::mutex> g(in.lock);
        got.swap(in.items);
    }
    uint64_t sum = 0;
    for (Response *resp : got) {
        sum += resp->body.size() + resp->chunks.size() + size_t(resp->status);
        delete resp;  // sized delete, usually on another thread than new
    }
    return sum;
}

void worker(int id, int threads, long requests)
{
    rng_t r = {uint64_t(id) * 7919 + 1};
    std::unordered_map<uint32_t, std::string> sessions;
    uint64_t sum = 0;
    Inbox &next = inboxes[size_t((id + 1) % threads)];
    for (long i = 0; i < requests; i++) {
        auto *req = new Request;
        req->method = (rng_next(&r) & 3) ? "GET" : "POST";
        req->path = "/api/v1/objects/" + text(&r, rng_range(&r, 8, 80));
        size_t nh = rng_range(&r, 4, 16);
        for (size_t h = 0; h < nh; h++)
            req->headers.emplace_back(text(&r, rng_range(&r, 6, 24)),
                                      text(&r, rng_range(&r, 8, 200)));
        auto *resp = new Response;
        resp->status = 200;
        resp->body = text(&r, rng_log(&r, 6, 14));  // 64 B - 16 KiB
        size_t nc = rng_range(&r, 0, 6);
        for (size_t c = 0; c < nc; c++)
            resp->chunks.push_back(text(&r, rng_range(&r, 16, 512)));
        uint32_t key = uint32_t(rng_next(&r) % 4096);
        sessions[key] = req->path + req->headers[0].second;  // long-lived
        sum += req->headers.size() + sessions.size();
        delete req;  // sized delete, same thread
        for (;;) {
            {
                std::lock_guard<std::mutex> g(next.lock);
                if (next.items.size() < INBOX_MAX) {
                    next.items.push_back(resp);
                    break;
                }
            }
            sum += drain(inboxes[size_t(id)]);
            std::this_thread::yield();
        }
        if ((i & 15) == 15)
            sum += drain(inboxes[size_t(id)]);
    }
    finished++;
    while (finished.load() < threads) {
        sum += drain(inboxes[size_t(id)]);
        std::this_thread::yield();
    }
    checksum += sum;
}

}  // namespace

int main(int argc, char **argv)
{
    int threads;
    double scale;
    parse_args(argc, argv, &threads, &scale);
    inboxes = std::vector<Inbox>(size_t(threads));
    long requests = long(40000 * scale / threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; t++)
        ts.emplace_back(worker, t, threads, requests);
    for (auto &t : ts)
        t.join();
    uint64_t sum = checksum.load();
    for (auto &in : inboxes)
        sum += drain(in);
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
