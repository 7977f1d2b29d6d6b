// Log Analytics workspace and workspace-based Application Insights, both Entra-only:
// local (key/instrumentation-key) authentication is disabled, so telemetry needs a token
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING in app.bicep, Monitoring Metrics Publisher in rbac.bicep).

@description('Region of both resources.')
param location string

@description('Tags applied to both resources.')
param tags object

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@minValue(30)
@maxValue(730)
@description('Days the workspace keeps logs, the Application Insights tables included (main.bicep passes LOG_RETENTION_DAYS, within 30 to 730).')
param retentionInDays int = 30

// "Manage data retention in a Log Analytics workspace": tables keep the workspace's retention,
// except these Application Insights tables, which keep 90 days unless set per table.
var applicationInsightsTables = [
  'AppAvailabilityResults'
  'AppBrowserTimings'
  'AppDependencies'
  'AppExceptions'
  'AppEvents'
  'AppMetrics'
  'AppPageViews'
  'AppPerformanceCounters'
  'AppRequests'
  'AppSystemEvents'
  'AppTraces'
]

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2026-03-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
      enableLogAccessUsingOnlyResourcePermissions: true
      // A 30-day workspace may otherwise keep data a 31st day (same article).
      immediatePurgeDataOn30Days: retentionInDays == 30
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

// The same retention for the Application Insights tables, and no long-term retention.
resource applicationInsightsTableRetention 'Microsoft.OperationalInsights/workspaces/tables@2026-03-01' = [for table in applicationInsightsTables: {
  parent: logAnalytics
  name: table
  properties: {
    retentionInDays: retentionInDays
    totalRetentionInDays: retentionInDays
  }
  dependsOn: [
    applicationInsights
  ]
}]

output logAnalyticsId string = logAnalytics.id
output applicationInsightsName string = applicationInsights.name
output applicationInsightsId string = applicationInsights.id
