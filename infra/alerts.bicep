// Alert rules on the app's telemetry, the availability test of /api/health and its alert, and
// the action group that emails them to the operator.
// The app exports OpenTelemetry metrics through the Azure Monitor distro into the
// workspace-based Application Insights, so they land in the Log Analytics table AppMetrics
// (Name, Sum, ItemCount, Min, Max, Properties = the metric's attributes, TimeGenerated); the
// Functions host writes AppRequests (ResultCode, DurationMs, OperationId) and the storage calls
// arrive as AppDependencies. Every rule is a log search alert (Microsoft.Insights/
// scheduledQueryRules) on the workspace; each fires when its query returns a row ("table rows"
// above 0), one alert per tenant where the rule splits by tenant. The README's "Operations"
// section says what each one means and what to do.
//
// API versions: scheduledQueryRules@2023-12-01 is the newest GA version in the Bicep type index
// (Azure/bicep-types-az, generated/monitor/microsoft.insights/2023-12-01); Azure Verified Modules
// (avm/res/insights/scheduled-query-rule) pin the 2023-03-15-preview, same body for what is used
// here. actionGroups@2023-01-01 is the version AVM pins (avm/res/insights/action-group); the
// newer 2024-10-01-preview is a preview.
//
// The availability test (below the log rules): webtests@2022-06-15, the version Azure Verified
// Modules pin (avm/res/insights/webtest) and the latest the ARM template reference shows
// (Microsoft.Insights/webtests, GA). Its alert:
// metricAlerts@2018-03-01, the version AVM pins (avm/res/insights/metric-alert) and the one of
// Microsoft's template "Metric alert rule for an availability test" (azure-quickstart-templates,
// quickstarts/microsoft.insights/monitoring-webtest-metric-alert).

@description('Region of the alert rules (the workspace\'s).')
param location string

@description('Tags applied to the rules and the action group.')
param tags object

@description('Resource ID of the Log Analytics workspace the rules query.')
param logAnalyticsId string

@description('Name of the action group (emails alertEmail).')
param actionGroupName string

@description('Email address of the operator the alerts go to. Empty: no action group is created and the rules still fire, visible under Monitor > Alerts in the portal, but nobody is emailed.')
param alertEmail string = ''

@minValue(1)
@description('Fewest requests of a tenant in 30 minutes for its failure ratio to alert (Entra counts failures from thousands; a handful of requests must not page anyone).')
param minRequests int = 20

@minValue(1)
@description('Server errors (HTTP 5xx, distinct requests) in 5 minutes that make a burst.')
param serverErrorBurst int = 5

@description('Deploy the Application Insights standard availability test of GET https://<siteHostName>/api/health and its alert.')
param availabilityTest bool = true

@description('Resource ID of the Application Insights component the availability test reports to (its hidden-link tag).')
param applicationInsightsId string

@description('Default host name of the Function App (<name>.azurewebsites.net), the host the availability test calls.')
param siteHostName string

// Failures as Entra counts them for its quarantine rule ("above 40 % failures", docs/ENTRA.md
// §6): every answered request that failed, 4xx and 5xx alike (a 409, a 400, a 404 on a PATCH or
// a 503 each fail an Entra operation). 401s are left out of both counts, as in the failure
// digest (scim/notify/digest.py): anyone who knows a Tenant URL can send requests with a wrong
// token, and Entra's own bad credentials quarantine at once, which the digest reports.
var failureRatioQuery = format('''
let minRequests = {0};
AppMetrics
| where Name == "scim.requests"
| extend tenant = tostring(Properties["scim.tenant"]), status = toint(Properties["http.response.status_code"])
| where status != 401
| summarize requests = sum(Sum), failures = sumif(Sum, status >= 400), TimeGenerated = max(TimeGenerated) by tenant
| where requests >= minRequests
| extend failurePercent = round(100.0 * failures / requests, 1)
| where failurePercent > 40
''', minRequests)

// The host's own request log covers every route (SCIM, events feed, token endpoint, portal) and
// the requests the worker never answered; distinct OperationIds, so a request the worker's
// OpenTelemetry span also records counts once.
var serverErrorQuery = format('''
let burst = {0};
AppRequests
| where toint(ResultCode) >= 500
| summarize serverErrors = dcount(OperationId), TimeGenerated = max(TimeGenerated)
| where serverErrors >= burst
''', serverErrorBurst)

// Azure Storage answers 503 (Server Busy) when an account or partition exceeds its scalability
// targets; 429 is included for any storage front end that uses it. Both legs count in real:
// union splits a column whose type differs between its legs into one column per type
// (throttled_real, throttled_long), and `throttled` below would not exist.
var storageThrottlingQuery = format('''
let storageSuffix = "{0}";
union
    (AppMetrics
    | where Name == "scim.storage.unavailable" and tostring(Properties["scim.reason"]) == "throttled"
    | summarize throttled = sum(Sum)),
    (AppDependencies
    | where Target contains storageSuffix and ResultCode in ("429", "503")
    | summarize throttled = todouble(sum(ItemCount)))
| summarize throttled = sum(throttled), TimeGenerated = now()
| where throttled > 0
''', environment().suffixes.storage)

// The newest backlog age each tenant reported in the window: a histogram recorded by each
// delivery pass and the delivery timer (0 when nothing waits), so a row's Max is the oldest age
// seen in its export interval.
var webhookBacklogQuery = '''
AppMetrics
| where Name == "scim.webhook.backlog_age"
| extend tenant = tostring(Properties["scim.tenant"])
| summarize arg_max(TimeGenerated, Max) by tenant
| where Max > 900
| project TimeGenerated, tenant, backlogAgeSeconds = Max
'''

// A failed digest is retried by the next run (every 10 minutes by default, NOTIFY_SCHEDULE), so
// one failure is not worth a page: the rule fires when sends failed in two of the 10-minute
// slots of the last 30 minutes, that is when the retry failed too.
var digestFailureQuery = '''
AppMetrics
| where Name == "scim.digest.emails" and tostring(Properties["scim.outcome"]) == "failed" and Sum > 0
| summarize failingRuns = dcount(bin(TimeGenerated, 10m)), failedEmails = sum(Sum), TimeGenerated = max(TimeGenerated)
| where failingRuns >= 2
'''

var byTenant = [
  {
    name: 'tenant'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

// Each rule: what it means and what to do (its description, shown in the alert and its email),
// severity (0 critical ... 4 verbose), how often it runs and over which window; autoMitigate
// resolves the alert once the condition no longer holds.
var rules = [
  {
    name: 'scim-tenant-failure-ratio'
    displayName: 'SCIM: a tenant is near Entra quarantine (over 40 % failures)'
    description: 'More than 40 % of one tenant\'s SCIM requests failed (4xx or 5xx, 401 excluded) in the last 30 minutes, with at least the minimum number of requests. Microsoft Entra quarantines a provisioning job above 40 % failures. Open the workbook (failure ratio per tenant), read the tenant\'s failures (python -m scim.admin log TENANT --failures --since 1h) and their correlation ids, and fix the cause (a mapping sending bad values, a conflict, an outage) before Entra quarantines the job; then tell the customer to restart provisioning if it was quarantined.'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    query: failureRatioQuery
    dimensions: byTenant
  }
  {
    name: 'scim-server-errors'
    displayName: 'SCIM: burst of server errors (5xx)'
    description: 'The app answered at least the configured number of requests with a 5xx in 5 minutes. A 503 with Retry-After means storage was unreachable, throttled or slow (see the storage throttling alert); a 500 is a bug or a crash. Look up the failed requests in Application Insights (AppRequests where ResultCode >= 500, then AppTraces and AppExceptions of the same operation id), check the storage account\'s health and metrics, and redeploy or roll back if a release caused it.'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    query: serverErrorQuery
    dimensions: []
  }
  {
    name: 'scim-storage-throttling'
    displayName: 'SCIM: Azure Storage is throttling the app'
    description: 'Azure Storage answered 503 (server busy) or 429, or the app gave up on a storage call as throttled, in the last 15 minutes. Requests then fail with 503 and Entra retries them later. Check the storage account\'s Transactions metric by response type and the workbook\'s storage calls per request: a burst from many tenants, a hot partition (one huge group) or another workload on the account. Spread the load or ask for higher limits if it persists.'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: storageThrottlingQuery
    dimensions: []
  }
  {
    name: 'scim-webhook-backlog'
    displayName: 'SCIM: a tenant\'s webhook backlog is older than 15 minutes'
    description: 'The oldest change event not yet delivered to one of a tenant\'s webhook endpoints is more than 15 minutes old. The endpoint is failing or slow, or delivery is not running. Check the tenant\'s webhooks in the portal or python -m scim.admin (last error, failing since), tell the customer if their endpoint is down, and check that the webhook timer runs (AppRequests and AppTraces of webhook_timer).'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: webhookBacklogQuery
    dimensions: byTenant
  }
  {
    name: 'scim-digest-failing'
    displayName: 'SCIM: failure digests are not being sent'
    description: 'Sending failure digest emails failed in two of the last three 10-minute runs, so tenants\' operators do not hear of provisioning failures. Read the notify_timer traces in Application Insights for the error: a 429 from Azure Communication Services means the sending limits (an Azure-managed domain allows 5 emails a minute and 10 an hour; use a custom domain), a 401/403 the app identity\'s role on the Communication Service, other errors the ACS endpoint. Failed digests are retried by the next run once the cause is fixed.'
    severity: 2
    evaluationFrequency: 'PT10M'
    windowSize: 'PT30M'
    query: digestFailureQuery
    dimensions: []
  }
]

// No action group without an address: the rules then fire without notifying anyone.
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'scim-ops'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroupIds = empty(alertEmail) ? [] : [
  actionGroup.id
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: rule.name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    scopes: [
      logAnalyticsId
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: rule.dimensions
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}]

// ---- availability test of /api/health ---------------------------------------------------------

// Flex Consumption has no platform Health check (scim/functions/health_adapter.py), so an
// Application Insights standard test calls GET /api/health (anonymous; host.json's route prefix
// is empty) every 5 minutes from each location and expects the 200 {"status":"ok"} the app
// answers when it reaches its table storage (a 503 means it cannot). Location ids: "Application
// Insights availability tests", Location population tags (Azure); the same article recommends at
// least five locations and an alert threshold of locations - 2. Retries: a location reports a
// failure only after three failed attempts in a row; a cold start or a single slow answer does
// not fail it (the app cuts its storage read at 10 s, the test waits 30 s). With restrictToEntra
// the site lets the test agents in through the ApplicationInsightsAvailability service tag
// (app.bicep, which says what else that lets in).
var healthTestLocations = [
  'us-va-ash-azr' // East US
  'us-ca-sjc-azr' // West US
  'emea-nl-ams-azr' // West Europe
  'emea-gb-db3-azr' // North Europe
  'apac-sg-sin-azr' // Southeast Asia
]
var healthTestName = 'scim-health'
var healthAlertFailedLocations = length(healthTestLocations) - 2
// The tag that links a web test (and its alert) to its component, required for the test to run
// and show under the component's Availability (AVM's webtest module adds it the same way).
var hiddenLink = {
  'hidden-link:${applicationInsightsId}': 'Resource'
}

resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = if (availabilityTest) {
  name: healthTestName
  location: location
  tags: union(tags, hiddenLink)
  kind: 'standard'
  properties: {
    Name: 'SCIM: GET /api/health'
    Description: 'GET /api/health answers 200 {"status":"ok"} when the app reaches its table storage (README, Operations, Health check).'
    SyntheticMonitorId: healthTestName
    Kind: 'standard'
    Enabled: true
    Frequency: 300
    Timeout: 30
    RetryEnabled: true
    Locations: [for id in healthTestLocations: {
      Id: id
    }]
    Request: {
      RequestUrl: 'https://${siteHostName}/api/health'
      HttpVerb: 'GET'
      ParseDependentRequests: false
      FollowRedirects: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      ContentValidation: {
        ContentMatch: '{"status":"ok"}'
        IgnoreCase: false
        PassIfTextFound: true
      }
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

// The documented alert on a standard test: locations failing at once ("Create a metric alert with
// an Azure Resource Manager template", availability test; the portal's own rule is the same),
// evaluated every minute over 5 minutes. Wired to the action group like the log rules.
resource healthAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (availabilityTest) {
  name: 'scim-health-unavailable'
  location: 'global'
  tags: union(tags, hiddenLink, {
    'hidden-link:${healthTest.id}': 'Resource'
  })
  properties: {
    description: 'GET /api/health failed (no 200 {"status":"ok"} after retries) from at least ${healthAlertFailedLocations} of the ${length(healthTestLocations)} test locations in 5 minutes: the app is down, cold and failing to start, or cannot reach its table storage (a 503), so Entra\'s provisioning requests fail too. Open the availability test (Application Insights, Availability) for the failing locations and responses: a 503 means storage is unreachable or throttled (check the storage account\'s health and the storage throttling alert), a 500 or a timeout a crash or a failed start (AppTraces and AppExceptions of the app; docs/deployment.md, The app doesn\'t start), a 403 an access restriction that no longer lets the test in. Redeploy or roll back if a release caused it.'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: applicationInsightsId
      failedLocationCount: healthAlertFailedLocations
    }
    autoMitigate: true
    actions: empty(alertEmail) ? [] : [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}
