// kafkajs against a kascade broker. Usage: node kafkajs_checks.js HOST:PORT [CHECK...]
// Prints `ok NAME` or `FAIL NAME: why` per check; exits 1 when any failed.
// kafkajs has no assign(): every read here goes through a consumer group.
'use strict'

const { Kafka, CompressionTypes, CompressionCodecs, ConfigResourceTypes, logLevel } = require('kafkajs')
const lz4 = require('lz4js')
const zstd = require('@bokuweb/zstd-wasm')

CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy')
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  async compress (encoder) { return Buffer.from(lz4.compress(encoder.buffer)) },
  async decompress (buffer) { return Buffer.from(lz4.decompress(buffer)) }
})
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress (encoder) { await zstd.init(); return Buffer.from(zstd.compress(encoder.buffer, 3)) },
  async decompress (buffer) { await zstd.init(); return Buffer.from(zstd.decompress(buffer)) }
})

const bootstrap = process.argv[2]
const TIMEOUT = 30000

class CheckFailed extends Error {}
const expect = (cond, what) => { if (!cond) throw new CheckFailed(what) }
const show = v => { const s = JSON.stringify(v); return s && s.length > 300 ? s.slice(0, 300) + '...' : s }
const expectEq = (got, want, what) => {
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new CheckFailed(`${what}: got ${show(got)}, want ${show(want)}`)
}
const unique = prefix => `${prefix}-${Math.random().toString(16).slice(2, 10)}`
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
async function until (ms, what, step) {
  const end = Date.now() + ms
  for (;;) {
    if (await step()) return
    if (Date.now() > end) throw new CheckFailed(`gave up after ${ms / 1000}s waiting for ${what}`)
    await sleep(50)
  }
}

const kafka = new Kafka({
  clientId: 'kascade-compat',
  brokers: [bootstrap],
  logLevel: process.env.KAFKAJS_LOG ? logLevel.DEBUG : logLevel.NOTHING,
  retry: { retries: 3, initialRetryTime: 100 }
})

async function withAdmin (fn) {
  const admin = kafka.admin()
  await admin.connect()
  try { return await fn(admin) } finally { await admin.disconnect() }
}

const create = (topic, numPartitions = 1, configEntries = []) => withAdmin(async admin => {
  const created = await admin.createTopics({ topics: [{ topic, numPartitions, replicationFactor: 1, configEntries }], waitForLeaders: true })
  expect(created, `topic ${topic} was not created`)
})

async function produce (topic, messages, opts = {}) {
  const { producerOpts = {}, ...send } = opts
  const producer = kafka.producer({ allowAutoTopicCreation: false, ...producerOpts })
  await producer.connect()
  try {
    const results = []
    for (let i = 0; i < messages.length; i += 1000) {
      results.push(...await producer.send({ topic, messages: messages.slice(i, i + 1000), acks: -1, ...send }))
    }
    return results
  } finally { await producer.disconnect() }
}

// Reads `count` messages of `topic` from the beginning with a fresh group.
async function read (topic, count, opts = {}) {
  const consumer = kafka.consumer({ groupId: unique('reader'), maxWaitTimeInMs: 200, ...opts })
  await consumer.connect()
  const got = []
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({ autoCommit: false, eachMessage: async ({ partition, message }) => { got.push({ partition, ...message }) } })
    await until(TIMEOUT, `${count} messages (have ${got.length})`, () => got.length >= count)
  } finally { await consumer.disconnect() }
  return got.sort((a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset))
}

const checks = {
  async metadata () {
    const topic = unique('meta')
    await create(topic, 3)
    await withAdmin(async admin => {
      const cluster = await admin.describeCluster()
      expectEq(cluster.brokers.length, 1, 'brokers')
      expectEq(`${cluster.brokers[0].host}:${cluster.brokers[0].port}`, bootstrap, 'advertised address')
      expectEq(cluster.controller, cluster.brokers[0].nodeId, 'controller')
      expect(cluster.clusterId, 'a cluster id')
      const md = await admin.fetchTopicMetadata({ topics: [topic] })
      expectEq(md.topics[0].partitions.map(p => p.partitionId).sort(), [0, 1, 2], 'partitions')
      expect((await admin.listTopics()).includes(topic), 'topic listed')
    })
  },

  async topics () {
    const topic = unique('topics')
    await withAdmin(async admin => {
      expect(await admin.createTopics({ topics: [{ topic, numPartitions: 2, configEntries: [{ name: 'retention.ms', value: '3600000' }] }] }), 'created')
      expectEq(await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] }), false, 'creating it again')
      await admin.deleteTopics({ topics: [topic], timeout: 5000 })
      expect(!(await admin.listTopics()).includes(topic), 'deleted topic still listed')
      try {
        await admin.deleteTopics({ topics: [topic], timeout: 5000 })
        throw new CheckFailed('deleting a deleted topic succeeded')
      } catch (e) {
        if (e instanceof CheckFailed) throw e
        expect(/UNKNOWN_TOPIC_OR_PARTITION|does not host this topic-partition/.test(`${e.type} ${e.message}`), `error deleting twice: ${e}`)
      }
    })
  },

  async unknown_topic () {
    const missing = unique('missing')
    const producer = kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 1 } })
    await producer.connect()
    try {
      await producer.send({ topic: missing, messages: [{ value: 'x' }] })
      throw new CheckFailed('producing to an unknown topic succeeded')
    } catch (e) {
      if (e instanceof CheckFailed) throw e
      expect(/not present in metadata|does not host this topic-partition|UNKNOWN_TOPIC/i.test(`${e.message} ${e.type}`), `error: ${e}`)
    } finally { await producer.disconnect() }
    await withAdmin(async admin => expect(!(await admin.listTopics()).includes(missing), 'the topic was auto-created'))
  },

  async roundtrip () {
    const topic = unique('roundtrip')
    await create(topic)
    const ts = Date.now() - 60000
    const res = await produce(topic, [
      { key: 'k0', value: 'v0', headers: { h1: ['a', 'dup'], h2: '' }, timestamp: String(ts) },
      { key: null, value: 'no key', timestamp: String(ts + 1) },
      { key: 'k0', value: null, timestamp: String(ts + 2) },
      { key: '', value: '' }
    ])
    expectEq(res[0].errorCode, 0, 'produce error')
    const got = await read(topic, 4)
    expectEq(got.map(m => m.offset), ['0', '1', '2', '3'], 'offsets')
    expectEq(got.map(m => m.key && m.key.toString()), ['k0', null, 'k0', null].map((k, i) => i === 3 ? '' : k), 'keys')
    expectEq(got.map(m => m.value && m.value.toString()), ['v0', 'no key', null, ''], 'values')
    expectEq(got[2].value, null, 'tombstone')
    expectEq(got[0].headers.h1.map(String), ['a', 'dup'], 'repeated header')
    expectEq(String(got[0].headers.h2), '', 'empty header')
    expectEq(got.slice(0, 3).map(m => Number(m.timestamp)), [ts, ts + 1, ts + 2], 'timestamps')
  },

  async codecs () {
    for (const [name, codec] of Object.entries({ none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy, lz4: CompressionTypes.LZ4, zstd: CompressionTypes.ZSTD })) {
      const topic = unique(`codec-${name}`)
      await create(topic)
      const messages = Array.from({ length: 300 }, (_, i) => ({ key: `k${i}`, value: `value ${i} `.repeat(20) }))
      await produce(topic, messages, { compression: codec })
      const got = await read(topic, 300)
      expectEq(got.map(m => [m.key.toString(), m.value.toString()]), messages.map(m => [m.key, m.value]), `${name}: records`)
    }
  },

  async large_messages () {
    const topic = unique('large')
    await create(topic, 1, [{ name: 'max.message.bytes', value: String(3 << 20) }])
    const big = [Buffer.alloc(1 << 20, 1), Buffer.alloc(1 << 20, 2)]
    await produce(topic, big.map(value => ({ value })))
    const got = await read(topic, 2, { maxBytesPerPartition: 2 << 20 })
    expect(got[0].value.equals(big[0]) && got[1].value.equals(big[1]), '1 MiB values came back changed')
  },

  async oversized () {
    const topic = unique('oversized')
    await create(topic, 1, [{ name: 'max.message.bytes', value: String(1 << 20) }])
    try {
      await produce(topic, [{ value: Buffer.alloc(2 << 20, 7) }], { producerOpts: { retry: { retries: 0 } } })
      throw new CheckFailed('a 2 MiB message was accepted by a 1 MiB topic')
    } catch (e) {
      if (e instanceof CheckFailed) throw e
      expect(/MESSAGE_TOO_LARGE|larger than the max message size/i.test(`${e.type} ${e.message}`), `error: ${e.type} ${e}`)
    }
    await produce(topic, [{ value: 'small' }])
  },

  async key_partitioning () {
    const topic = unique('keys')
    await create(topic, 4)
    const res = []
    for (let i = 0; i < 170; i++) {
      const [r] = await produce(topic, [{ key: `key-${i % 17}`, value: String(i) }])
      res.push(r.partition)
    }
    const where = {}
    res.forEach((p, i) => { (where[i % 17] = where[i % 17] || new Set()).add(p) })
    expect(Object.values(where).every(s => s.size === 1), 'a key went to two partitions')
    expect(new Set(res).size > 1, '17 keys all in one partition')
  },

  async order () {
    const topic = unique('order')
    await create(topic, 3)
    const n = 10000
    await produce(topic, Array.from({ length: n }, (_, i) => ({ value: String(i), partition: i % 3 })))
    const got = await read(topic, n)
    for (let p = 0; p < 3; p++) {
      const values = got.filter(m => m.partition === p).map(m => Number(m.value.toString()))
      const want = []
      for (let i = p; i < n; i += 3) want.push(i)
      expect(JSON.stringify(values) === JSON.stringify(want), `partition ${p} out of order or incomplete (${values.length} records)`)
    }
  },

  async offsets_for_times () {
    const topic = unique('times')
    await create(topic)
    const base = Date.now() - 100000
    await produce(topic, Array.from({ length: 10 }, (_, i) => ({ value: String(i), timestamp: String(base + 1000 * i) })))
    await withAdmin(async admin => {
      for (const [ts, want] of [[base, '0'], [base + 4500, '5'], [base + 9000, '9']]) {
        const [r] = await admin.fetchTopicOffsetsByTimestamp(topic, ts)
        expectEq(r.offset, want, `offset for time ${ts - base}`)
      }
      const [o] = await admin.fetchTopicOffsets(topic)
      expectEq([o.low, o.high], ['0', '10'], 'low and high')
    })
  },

  async seek () {
    const topic = unique('seek')
    await create(topic)
    await produce(topic, Array.from({ length: 20 }, (_, i) => ({ value: String(i) })))
    const consumer = kafka.consumer({ groupId: unique('seek'), maxWaitTimeInMs: 200 })
    await consumer.connect()
    const got = []
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      await consumer.run({ autoCommit: false, eachMessage: async ({ message }) => { got.push(Number(message.offset)) } })
      consumer.seek({ topic, partition: 0, offset: '15' })
      await until(TIMEOUT, 'records from 15', () => got.includes(19))
      expectEq(got.filter(o => o >= 15), [15, 16, 17, 18, 19], 'after seek to 15')
      got.length = 0
      consumer.seek({ topic, partition: 0, offset: '3' })
      await until(TIMEOUT, 'records from 3', () => got.includes(19))
      expectEq(got.slice(0, 3), [3, 4, 5], 'after seek back to 3')
    } finally { await consumer.disconnect() }
  },

  async idempotent () {
    const topic = unique('idem')
    await create(topic, 2)
    const messages = Array.from({ length: 2000 }, (_, i) => ({ key: `k${i % 5}`, value: String(i) }))
    await produce(topic, messages, { producerOpts: { idempotent: true, maxInFlightRequests: 1 } })
    const got = await read(topic, 2000)
    expectEq(got.map(m => Number(m.value.toString())).sort((a, b) => a - b), messages.map((_, i) => i), 'exactly the produced records')
  },

  async configs () {
    const topic = unique('configs')
    await create(topic, 1, [{ name: 'retention.ms', value: '7200000' }])
    await withAdmin(async admin => {
      const value = async name => {
        const r = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false })
        const e = r.resources[0].configEntries.find(c => c.configName === name)
        return e && e.configValue
      }
      expectEq(await value('retention.ms'), '7200000', 'retention.ms as created')
      expect(await value('max.message.bytes'), 'max.message.bytes described')
      await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '60000' }] }] })
      expectEq(await value('retention.ms'), '60000', 'retention.ms after alter')
    })
  },

  async create_partitions () {
    const topic = unique('grow')
    await create(topic, 2)
    await withAdmin(async admin => {
      await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] })
      const md = await admin.fetchTopicMetadata({ topics: [topic] })
      expectEq(md.topics[0].partitions.length, 4, 'partitions after')
    })
    const [r] = await produce(topic, [{ value: 'x', partition: 3 }])
    expectEq([r.partition, r.errorCode], [3, 0], 'produce to a new partition')
  },

  async delete_records () {
    const topic = unique('trim')
    await create(topic)
    await produce(topic, Array.from({ length: 10 }, (_, i) => ({ value: String(i) })))
    await withAdmin(async admin => {
      await admin.fetchTopicMetadata({ topics: [topic] })
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '4' }] })
      const [o] = await admin.fetchTopicOffsets(topic)
      expectEq([o.low, o.high], ['4', '10'], 'low and high after delete')
    })
    const got = await read(topic, 6)
    expectEq(got.map(m => m.offset), ['4', '5', '6', '7', '8', '9'], 'records left')
  },

  async group_rebalance () {
    const topic = unique('group')
    const groupId = unique('g')
    await create(topic, 4)
    const first = Array.from({ length: 200 }, (_, i) => ({ value: `a${i}`, partition: i % 4 }))
    await produce(topic, first)
    const member = async () => {
      const c = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500, rebalanceTimeout: 10000, maxWaitTimeInMs: 200 })
      const m = { c, seen: [], assigned: [] }
      c.on(c.events.GROUP_JOIN, e => { m.assigned = (e.payload.memberAssignment[topic] || []).slice().sort() })
      await c.connect()
      await c.subscribe({ topics: [topic], fromBeginning: true })
      await c.run({ autoCommit: true, autoCommitThreshold: 1, eachMessage: async ({ message }) => { m.seen.push(message.value.toString()) } })
      return m
    }
    const m1 = await member()
    const m2 = await member()
    await until(60000, 'two members to share 200 records', () => m1.seen.length + m2.seen.length >= 200 && m1.assigned.length && m2.assigned.length)
    expectEq([...m1.seen, ...m2.seen].sort(), first.map(m => m.value).sort(), 'first batch read once')
    expectEq([...m1.assigned, ...m2.assigned].sort(), [0, 1, 2, 3], 'assignments cover the topic')
    await m2.c.disconnect()
    m1.seen.length = 0
    const second = Array.from({ length: 200 }, (_, i) => ({ value: `b${i}`, partition: i % 4 }))
    await produce(topic, second)
    await until(60000, 'the remaining member to read the second batch', () => m1.seen.length >= 200)
    await sleep(500)
    expectEq(m1.assigned, [0, 1, 2, 3], 'the remaining member has every partition')
    expectEq(m1.seen.slice().sort(), second.map(m => m.value).sort(), 'second batch read once')
    await m1.c.disconnect()
    await produce(topic, [{ value: 'c', partition: 0 }])
    const m3 = await member()
    await until(60000, 'a new member to read the new record', () => m3.seen.length >= 1)
    await sleep(500)
    await m3.c.disconnect()
    expectEq(m3.seen, ['c'], 'what a new member reads')
  },

  async group_admin () {
    const topic = unique('gadmin')
    const groupId = unique('ga')
    await create(topic, 2)
    await produce(topic, [{ value: 'x', partition: 0 }, { value: 'x', partition: 1 }])
    const c = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 200 })
    const seen = []
    await c.connect()
    await c.subscribe({ topics: [topic], fromBeginning: true })
    await c.run({ autoCommit: true, autoCommitThreshold: 1, eachMessage: async ({ message }) => { seen.push(message) } })
    await until(60000, 'the member to read 2 records', () => seen.length >= 2)
    await withAdmin(async admin => {
      const listed = await admin.listGroups()
      expect(listed.groups.some(g => g.groupId === groupId), `${groupId} listed: ${show(listed)}`)
      let [desc] = (await admin.describeGroups([groupId])).groups
      expectEq([desc.state, desc.members.length], ['Stable', 1], 'described while active')
      await c.disconnect()
      ;[desc] = (await admin.describeGroups([groupId])).groups
      expectEq([desc.state, desc.members.length], ['Empty', 0], 'described after the member left')
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] })
      expectEq(offsets.partitions.map(p => [p.partition, p.offset]).sort(), [[0, '1'], [1, '1']], 'committed offsets')
      await admin.deleteGroups([groupId])
      expect(!(await admin.listGroups()).groups.some(g => g.groupId === groupId), 'listed after delete')
    })
  }
}

async function main () {
  const names = process.argv.length > 3 ? process.argv.slice(3) : Object.keys(checks)
  const failed = []
  for (const name of names) {
    const check = checks[name]
    const start = Date.now()
    if (!check) { console.log(`FAIL ${name}: no such check`); failed.push(name); continue }
    try {
      await check()
      console.log(`ok ${name} (${((Date.now() - start) / 1000).toFixed(1)}s)`)
    } catch (e) {
      console.log(`FAIL ${name}: ${e.name}: ${e.message}`)
      console.error(`--- ${name} ---\n${e.stack}`)
      failed.push(name)
    }
  }
  if (failed.length) {
    console.log(`${failed.length} of ${names.length} checks failed: ${failed.join(' ')}`)
    process.exit(1)
  }
  process.exit(0)
}

main()
