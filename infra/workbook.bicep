// The operations workbook (Azure Monitor > Workbooks, or the workspace's Workbooks blade): request
// rate, failure ratio per tenant, latency percentiles, storage calls per request, storage
// unavailability, the webhook backlog and failure digests. Its content is infra/workbook.json
// (the portal's Advanced Editor format, "Notebook/1.0"); tests/test_infra.py checks that it
// parses and queries only the metric names the app emits.
//
// Microsoft.Insights/workbooks@2023-06-01 is the current version of the type ("Microsoft.Insights
// workbooks" template reference); its name must be a GUID, kind 'shared'.

@description('Region of the workbook.')
param location string

@description('Tags applied to the workbook.')
param tags object

@description('Resource ID of the Log Analytics workspace the workbook queries (its source).')
param logAnalyticsId string

@description('Name shown in the portal.')
param displayName string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, logAnalyticsId, 'scim-operations-workbook')
  location: location
  // The portal lists a workbook under its hidden-title tag.
  tags: union(tags, {
    'hidden-title': displayName
  })
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: logAnalyticsId
    version: 'Notebook/1.0'
    // The queries run against the workspace the workbook is opened from, this one by default.
    serializedData: string(union(loadJsonContent('workbook.json'), {
      fallbackResourceIds: [
        logAnalyticsId
      ]
    }))
  }
}

output workbookId string = workbook.id
